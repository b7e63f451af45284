"""The per-frame metrics, the project's one module for them (the stage checks and the
evaluation protocols both read them): PSNR, SSIM, F-LMD (all 68 landmarks) and M-LMD (the 20 mouth
landmarks) on uint8 RGB frames (N, H, W, 3), with landmarks found on the pixels by the project's
detector (dlib's HOG detector and 68-point predictor, as the features stage's `dlib` backend),
the Head-Kps error and the mouth opening. Distances are in pixels of the frames given.

SSIM is scikit-image's `structural_similarity` (7x7 uniform window, RGB channels averaged,
data range 255); torchmetrics' default (11x11 Gaussian) gives other numbers, so compare SSIMs
only within one implementation.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import stats
from skimage.metrics import structural_similarity

from components.evaluation.dlib_workers import DlibWorkers, worker_model
from components.features.head_kps import head_kps
from components.features.landmarks import DlibLandmarks, face_boxes

MOUTH = slice(48, 68)
DETECTOR_SIDE = 128  # frames are upscaled to at least this before detection (dlib's HOG needs
# faces of ~80 px)


def psnr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean(axis=(1, 2, 3))
    return 10 * np.log10(255.0**2 / np.maximum(mse, 1e-10))


def ssim(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.array([structural_similarity(x, y, channel_axis=-1, data_range=255)
                     for x, y in zip(a, b, strict=True)])


class FaceLandmarks:
    """68 landmarks per frame, NaN where no face is found; faces found on `workers`' processes
    where given (the same numbers)."""

    def __init__(self, predictor_path: str, workers: DlibWorkers | None = None):
        self.dlib = DlibLandmarks(predictor_path)
        self.workers = workers

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        scale = max(1, math.ceil(DETECTOR_SIDE / frames.shape[1]))
        if scale > 1:
            frames = np.stack([cv2.resize(f, None, fx=scale, fy=scale,
                                          interpolation=cv2.INTER_CUBIC) for f in frames])
        boxes = None if self.workers is None or not len(frames) else \
            self.workers.map(_boxes_on_worker, frames)
        return self.dlib(frames, boxes) / scale


def _boxes_on_worker(frames: np.ndarray) -> list:
    return face_boxes(worker_model("detector"), frames)


def landmark_distance(a: np.ndarray, b: np.ndarray, points=slice(None)) -> np.ndarray:
    """Mean Euclidean distance per frame over `points` of (N, K, 2) landmarks (NaN if missing)."""
    return np.linalg.norm(a[:, points] - b[:, points], axis=-1).mean(axis=1)


def f_lmd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return landmark_distance(a, b)


def m_lmd(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return landmark_distance(a, b, MOUTH)


def kps_error(landmarks: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Head-Kps of found landmarks (N, 68, 2) against keypoints (N, 8, 2)."""
    return landmark_distance(head_kps(landmarks), kps)


def mouth_opening(landmarks: np.ndarray) -> np.ndarray:
    """Inner-lip opening per frame of (N, 68, 2) landmarks: upper to lower lip midpoint."""
    return np.linalg.norm(landmarks[:, 62] - landmarks[:, 66], axis=-1)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation over the frames where both are finite (NaN if either is constant)."""
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) < 1e-9 or np.std(b[ok]) < 1e-9:
        return float("nan")
    return float(stats.pearsonr(a[ok], b[ok]).statistic)


def nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, np.float64)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def paired_difference(a: np.ndarray, b: np.ndarray, frames: int) -> tuple[float, float]:
    """Mean and standard error, over windows of `frames` frames, of per-frame scores `a` - `b`
    (two generations of the same windows): whether a gap between two rows is more than noise."""
    per_window = np.nanmean((a - b).reshape(-1, frames), axis=1)
    per_window = per_window[np.isfinite(per_window)]
    if len(per_window) < 2:
        return float("nan"), float("nan")
    return float(per_window.mean()), float(stats.sem(per_window))


def frame_metrics(generated: np.ndarray, real: np.ndarray, lm_generated: np.ndarray,
                  lm_real: np.ndarray) -> dict[str, np.ndarray]:
    """Per frame, over (N, R, R, 3) frames and their (N, 68, 2) landmarks."""
    return {"psnr": psnr(generated, real), "ssim": ssim(generated, real),
            "f_lmd": f_lmd(lm_generated, lm_real), "m_lmd": m_lmd(lm_generated, lm_real),
            "faces_found": np.isfinite(lm_generated).all(axis=(1, 2)).astype(np.float64)}


def mean_metrics(per_frame: dict[str, np.ndarray]) -> dict[str, float]:
    return {name: nanmean(values) for name, values in per_frame.items()}
