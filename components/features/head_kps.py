"""Head-Kps: the 8 upper-face keypoints that carry head pose to the guider, drawn on black.

From the 68 iBUG points: the face edges (jaw ends 0 and 16), both pupils (eye-contour centres)
and four nose-bridge points (27-30). The image's left side is always drawn in one colour and its
right side in another, the midline in a third, so the guider can tell left from right.
"""

from __future__ import annotations

import cv2
import numpy as np

NAMES = ("edge_left", "edge_right", "pupil_left", "pupil_right",
         "bridge_top", "bridge_upper", "bridge_lower", "nose_tip")
LEFT, RIGHT, MIDLINE = (255, 64, 64), (64, 128, 255), (255, 255, 255)  # RGB
COLOURS = (LEFT, RIGHT, LEFT, RIGHT, MIDLINE, MIDLINE, MIDLINE, MIDLINE)


def head_kps(landmarks: np.ndarray) -> np.ndarray:
    """(..., 68, 2) landmarks to (..., 8, 2) keypoints in `NAMES` order."""
    return np.stack([
        landmarks[..., 0, :], landmarks[..., 16, :],
        landmarks[..., 36:42, :].mean(-2), landmarks[..., 42:48, :].mean(-2),
        landmarks[..., 27, :], landmarks[..., 28, :], landmarks[..., 29, :], landmarks[..., 30, :],
    ], axis=-2).astype(np.float32)


def render_head_kps(kps: np.ndarray, size: int, radius: float | None = None) -> np.ndarray:
    """One (size, size, 3) uint8 RGB image: the keypoints as filled dots on black, with the
    nose bridge joined by a line."""
    image = np.zeros((size, size, 3), np.uint8)
    r = radius or max(1.0, size / 64)
    if np.isnan(kps).any():
        return image
    fixed = np.round(kps * 16).astype(np.int32)
    cv2.polylines(image, [fixed[4:8]], False, MIDLINE, max(1, int(r / 2)), cv2.LINE_AA, shift=4)
    for point, colour in zip(fixed, COLOURS, strict=True):
        cv2.circle(image, tuple(point), int(r * 16), colour, -1, cv2.LINE_AA, shift=4)
    return image
