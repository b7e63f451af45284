"""Per-frame expression coefficients, pluggable.

- `basis`: a landmark expression basis fitted on the training split only. Each frame's 68 points
  are aligned to the mean shape on the rigid points (jaw, eyes, nose bridge); the linear effect
  of head pose (estimated with solvePnP against a 3-D face template, learnt from pose changes
  within clips) is regressed out; each
  identity's mean aligned shape is subtracted (identity removed); PCA gives `n` whitened
  coefficients. The fitted basis is saved as a plain npz so test and inference use the same one.
- `3dmm`: precomputed Deep3DFaceRecon coefficients as StyleTalk distributes them (`.mat` with
  `coeff` (T, 257) or `coeff_3dmm` (T, 73), or `.npy`): the 64 expression coefficients.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from components.errors import SvpError
from components.face_template import TEMPLATE

RIGID = [*range(0, 17), 27, 28, 29, 30, *range(36, 48)]
N_3DMM_EXPRESSION = 64


def head_pose(landmarks: np.ndarray, frame_size: tuple[int, int]) -> np.ndarray:
    """Yaw, pitch, roll in degrees per frame (T, 3), by solvePnP against the 3-D template; NaN
    where the frame has no landmarks."""
    h, w = frame_size
    camera = np.array([[3.0 * w, 0, w / 2], [0, 3.0 * w, h / 2], [0, 0, 1]])
    model = TEMPLATE * [1, 1, -1]  # the template's z points to the camera, OpenCV's away
    poses = np.full((len(landmarks), 3), np.nan, np.float32)
    for t, points in enumerate(landmarks):
        if np.isnan(points).any():
            continue
        ok, rvec, _ = cv2.solvePnP(model, points.astype(np.float64), camera, None,
                                   flags=cv2.SOLVEPNP_EPNP)
        if not ok:
            continue
        r = cv2.Rodrigues(rvec)[0]
        yaw = np.degrees(np.arcsin(np.clip(r[0, 2], -1, 1)))
        pitch = np.degrees(np.arctan2(-r[1, 2], r[2, 2]))
        roll = np.degrees(np.arctan2(-r[0, 1], r[0, 0]))
        poses[t] = yaw, pitch, roll
    return poses


def align(landmarks: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """Similarity-align each frame (T, 68, 2) to `mean` (68, 2) on the rigid points (Umeyama)."""
    out = np.empty_like(landmarks, dtype=np.float64)
    target = mean[RIGID] - mean[RIGID].mean(0)
    for t, points in enumerate(landmarks):
        src = points[RIGID] - points[RIGID].mean(0)
        u, s, vt = np.linalg.svd(target.T @ src)
        d = np.sign(np.linalg.det(u @ vt))
        rot = u @ np.diag([1, d]) @ vt
        scale = (s * [1, d]).sum() / (src**2).sum()
        out[t] = scale * (points - points[RIGID].mean(0)) @ rot.T + mean[RIGID].mean(0)
    return out


@dataclass(frozen=True)
class ExpressionBasis:
    mean_shape: np.ndarray  # (68, 2)
    pose_effect: np.ndarray  # (3, 136): aligned-shape change per degree of yaw, pitch, roll
    components: np.ndarray  # (n, 136)
    scales: np.ndarray  # (n,): the std of each coefficient on the training split
    identities: np.ndarray  # the training identities it was fitted on

    def residual(self, landmarks: np.ndarray, pose: np.ndarray,
                 identity_mean: np.ndarray) -> np.ndarray:
        aligned = align(landmarks, self.mean_shape).reshape(len(landmarks), -1)
        return aligned - identity_mean.reshape(-1) - np.nan_to_num(pose) @ self.pose_effect

    def coefficients(self, landmarks: np.ndarray, pose: np.ndarray,
                     identity_mean: np.ndarray) -> np.ndarray:
        """(T, n) whitened coefficients."""
        res = self.residual(landmarks, pose, identity_mean)
        return ((res @ self.components.T) / self.scales).astype(np.float32)

    def save(self, path: str | Path) -> None:
        with open(path, "wb") as f:
            np.savez(f, mean_shape=self.mean_shape, pose_effect=self.pose_effect,
                     components=self.components, scales=self.scales, identities=self.identities)

    @classmethod
    def load(cls, path: str | Path) -> ExpressionBasis:
        with np.load(path, allow_pickle=False) as data:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__})


def identity_mean_shape(landmarks: list[np.ndarray], mean_shape: np.ndarray) -> np.ndarray:
    """The mean aligned shape over all frames of one identity (all its clips)."""
    return np.concatenate([align(lm, mean_shape) for lm in landmarks]).mean(0)


def fit_basis(clips: list[tuple[str, np.ndarray, np.ndarray]], n: int) -> ExpressionBasis:
    """Fit on (identity, landmarks (T, 68, 2), pose (T, 3)) of training clips with faces."""
    if not clips:
        raise SvpError("expression basis: no training clip with landmarks to fit on")
    all_points = np.concatenate([lm for _, lm, _ in clips])
    mean_shape = align(all_points, all_points[0]).mean(0)
    mean_shape = align(all_points, mean_shape).mean(0)
    by_identity: dict[str, list[np.ndarray]] = {}
    for identity, lm, _ in clips:
        by_identity.setdefault(identity, []).append(lm)
    identity_means = {i: identity_mean_shape(lms, mean_shape) for i, lms in by_identity.items()}
    per_clip = [align(lm, mean_shape).reshape(len(lm), -1) - identity_means[i].reshape(-1)
                 for i, lm, _ in clips]
    poses_per_clip = [np.nan_to_num(p) for _, _, p in clips]
    # The pose effect is learnt from pose changes within each clip only: an emotion's steady
    # head posture (sad looks down) must not be mistaken for what pose does to the shape.
    pose_effect = np.linalg.lstsq(
        np.concatenate([p - p.mean(0) for p in poses_per_clip]),
        np.concatenate([s - s.mean(0) for s in per_clip]), rcond=None)[0]
    shapes, poses = np.concatenate(per_clip), np.concatenate(poses_per_clip)
    residual = shapes - poses @ pose_effect
    residual -= residual.mean(0)
    n = min(n, residual.shape[1], len(residual) - 1)
    _, s, vt = np.linalg.svd(residual, full_matrices=False)
    scales = s[:n] / np.sqrt(len(residual) - 1)
    return ExpressionBasis(mean_shape=mean_shape, pose_effect=pose_effect,
                           components=vt[:n], scales=np.maximum(scales, 1e-8),
                           identities=np.array(sorted(by_identity)))


def load_3dmm(expression_dir: str | Path, sample_id: str, video_path: str) -> np.ndarray:
    """The 64 Deep3DFaceRecon expression coefficients per frame, for one clip."""
    from scipy.io import loadmat

    root = Path(expression_dir)
    names = (sample_id, Path(video_path).stem)
    for name in names:
        for path in (root / f"{name}.mat", root / f"{name}.npy"):
            if not path.is_file():
                continue
            if path.suffix == ".npy":
                data = np.load(path, allow_pickle=False)
            else:
                mat = loadmat(path)
                key = next((k for k in ("coeff", "coeff_3dmm", "exp") if k in mat), None)
                if key is None:
                    raise SvpError(f"{path}: no 'coeff', 'coeff_3dmm' or 'exp' array")
                data = mat[key]
            data = np.asarray(data, np.float32)
            if data.ndim != 2 or data.shape[1] not in (64, 73, 257):
                raise SvpError(f"{path}: expected (T, 64|73|257) coefficients, got {data.shape}")
            return data[:, 80:144] if data.shape[1] == 257 else data[:, :N_3DMM_EXPRESSION]
    raise SvpError(f"{root}: no 3DMM file for {sample_id} (looked for {names[0]}.mat/.npy and "
                   f"{names[1]}.mat/.npy)")
