"""Square face crops that follow the landmarks, smoothed over time so the crop does not jitter."""

from __future__ import annotations

import cv2
import numpy as np


def fill_gaps(values: np.ndarray) -> np.ndarray:
    """Linearly interpolate NaN rows (frames without a face) from their neighbours."""
    values = values.copy()
    t = np.arange(len(values))
    ok = ~np.isnan(values).any(axis=1)
    for col in range(values.shape[1]):
        values[:, col] = np.interp(t, t[ok], values[ok, col])
    return values


def smooth_boxes(landmarks: np.ndarray, scale: float, window: int) -> np.ndarray:
    """Per frame (x0, y0, side) of a square around the landmarks, `scale` times their extent,
    averaged over `window` frames. Needs at least one frame with a face."""
    lo, hi = np.nanmin(landmarks, axis=1), np.nanmax(landmarks, axis=1)
    centre = (lo + hi) / 2
    side = scale * np.max(hi - lo, axis=1, keepdims=True)
    track = fill_gaps(np.hstack([centre, side]))
    if window > 1:
        kernel = np.ones(window) / window
        padded = np.pad(track, ((window // 2, window - 1 - window // 2), (0, 0)), mode="edge")
        track = np.stack([np.convolve(padded[:, c], kernel, mode="valid")
                          for c in range(3)], axis=1)
    return np.column_stack([track[:, 0] - track[:, 2] / 2, track[:, 1] - track[:, 2] / 2,
                            track[:, 2]]).astype(np.float32)


def crop_frame(frame: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """The box resampled to size x size; outside the frame is black."""
    x0, y0, side = box
    k = size / side
    affine = np.array([[k, 0, -x0 * k], [0, k, -y0 * k]], np.float32)
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def to_crop(points: np.ndarray, box: np.ndarray, size: int) -> np.ndarray:
    """Frame-pixel points (..., 2) into crop pixels."""
    x0, y0, side = box
    return ((points - [x0, y0]) * (size / side)).astype(np.float32)


def union_box(boxes: np.ndarray) -> np.ndarray:
    """The square (x0, y0, side) around the union of boxes (T, 3): one still camera framing
    every one of them."""
    lo = boxes[:, :2].min(0)
    hi = (boxes[:, :2] + boxes[:, 2:3]).max(0)
    side = float((hi - lo).max())
    centre = (lo + hi) / 2
    return np.array([centre[0] - side / 2, centre[1] - side / 2, side], np.float32)
