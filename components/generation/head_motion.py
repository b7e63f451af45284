"""The Head-Kps track a video is generated along: a pose video's head motion retargeted to the
portrait, or, without one, natural motion derived from the portrait itself.

Retargeting moves the portrait's keypoints by the pose video's motion, not to its keypoints:
frame t is `reference + A (pose_t - pose_0)`, where A (scale and rotation) maps the pose video's
first-frame keypoints onto the portrait's (least squares). The portrait keeps its own face
geometry (eye distance, nose length) and the pose video lends only how the head moves.

Derived motion follows the synth's head model (`components.synth.face_model.head_pose_track`) in
the image plane: per axis two sines (about 0.25 Hz and 2.3 times that, random phases from the
seed) for sway, bob and roll, plus a nod of the nose keypoints when the speech gets louder. A
held-out speaker of the embedded data moves about as much.
"""

from __future__ import annotations

import numpy as np

NOSE = slice(4, 8)  # nose bridge keypoints in Head-Kps order


def similarity_matrix(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x2 scale-rotation A minimising |A (source - mean) - (target - mean)|² (Umeyama)."""
    s, t = source - source.mean(0), target - target.mean(0)
    u, sigma, vt = np.linalg.svd(t.T @ s)
    d = np.sign(np.linalg.det(u @ vt)) or 1.0
    rotation = u @ np.diag([1.0, d]) @ vt
    return (sigma * [1.0, d]).sum() / max((s**2).sum(), 1e-9) * rotation


def retargeted_kps(reference: np.ndarray, pose: np.ndarray) -> np.ndarray:
    """(T, 8, 2): the portrait's keypoints (8, 2) moved as the pose video's (T, 8, 2) move."""
    a = similarity_matrix(pose[0], reference)
    return (reference[None] + (pose - pose[0]) @ a.T).astype(np.float32)


def _sway(n: int, fps: float, hz: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) / fps
    f1, f2 = hz * rng.uniform(0.8, 1.25, size=2) * (1.0, 2.3)
    p1, p2 = rng.uniform(0, 2 * np.pi, size=2)
    return 0.7 * np.sin(2 * np.pi * f1 * t + p1) + 0.3 * np.sin(2 * np.pi * f2 * t + p2)


def derived_kps(reference: np.ndarray, n_frames: int, fps: float, loudness: np.ndarray,
                seed: int, amplitude: float, hz: float = 0.25) -> np.ndarray:
    """(T, 8, 2) keypoints around the portrait's (8, 2); `loudness` (T,) in 0..1; `amplitude`
    is the sway as a share of the face width (0: a still head)."""
    rng = np.random.default_rng(seed)
    width = float(np.linalg.norm(reference[1] - reference[0]))
    centre = reference.mean(0)
    dx, dy = (amplitude * width * _sway(n_frames, fps, hz, rng) for _ in range(2))
    roll = np.radians(2.0 * amplitude / 0.03 * _sway(n_frames, fps, hz, rng))
    kernel = np.ones(5) / 5
    nod = np.convolve(np.diff(loudness, prepend=loudness[:1]), kernel, mode="same")
    out = np.empty((n_frames, *reference.shape), np.float32)
    for t in range(n_frames):
        c, s = np.cos(roll[t]), np.sin(roll[t])
        out[t] = (reference - centre) @ np.array([[c, s], [-s, c]]) + centre + [dx[t], 0.6 * dy[t]]
        out[t, NOSE, 1] += 2.0 * amplitude * width * nod[t]
    return out
