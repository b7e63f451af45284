"""Identity similarity (CSIM): cosine similarity of dlib's face-recognition embedding.

dlib's ResNet (`dlib_face_recognition_resnet_model_v1.dat`, 128-d, 99.38% on LFW) ships in the
`face-recognition-models` package. Each face is aligned by its 68 landmarks into dlib's 150-pixel
chip first (a small crop is upscaled before, so the chip is not blurred further by the warp).
CSIM of a generated frame is its embedding's cosine similarity to the reference image's.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import cv2
import dlib
import numpy as np
from sklearn.metrics import roc_auc_score

from components.errors import SvpError
from components.evaluation.dlib_workers import DlibWorkers, worker_model

CHIP = 150  # dlib's aligned face chip side
MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def packaged_model() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE


class FaceIdentity:
    """128-d identity embeddings of faces whose 68 landmarks are known; on `workers`' processes
    where given (the same numbers)."""

    def __init__(self, model_path: str | None = None, workers: DlibWorkers | None = None):
        self.path = Path(model_path) if model_path else packaged_model()
        if self.path is None or not self.path.is_file():
            raise SvpError(f"{self.path or MODEL_FILE}: dlib's face-recognition model not found "
                           "(install face-recognition-models, or set its path)")
        self.model = dlib.face_recognition_model_v1(str(self.path))
        self.workers = workers

    def __call__(self, frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB and (N, 68, 2) landmarks in their pixels -> (N, 128), a NaN
        row where the landmarks are missing."""
        if self.workers is not None and len(frames):
            return np.stack(self.workers.map(_embeddings_on_worker, frames, landmarks))
        return face_embeddings(self.model, frames, landmarks)


def _embeddings_on_worker(frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    return face_embeddings(worker_model("recognizer"), frames, landmarks)


def face_embeddings(model, frames: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """`FaceIdentity` with dlib's network `model`: each face aligned into dlib's chip first."""
    scale = max(1, math.ceil(CHIP / frames.shape[1]))
    out = np.full((len(frames), 128), np.nan)
    for i, (frame, points) in enumerate(zip(frames, landmarks, strict=True)):
        if not np.isfinite(points).all():
            continue
        if scale > 1:
            frame = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        points = (points * scale).round().astype(int).tolist()
        xs, ys = zip(*points, strict=True)
        shape = dlib.full_object_detection(dlib.rectangle(min(xs), min(ys), max(xs), max(ys)),
                                           dlib.points([dlib.point(*p) for p in points]))
        chip = dlib.get_face_chip(np.ascontiguousarray(frame), shape, size=CHIP, padding=0.25)
        out[i] = np.asarray(model.compute_face_descriptor(chip))
    return out


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of (N, D) and (N, D) or (D,)."""
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def identity_auc(embeddings: np.ndarray, identities: list[str]) -> dict[str, float]:
    """How well cosine similarity tells same-identity pairs from other-identity pairs."""
    ok = np.isfinite(embeddings).all(1)
    emb, ids = embeddings[ok], np.asarray(identities)[ok]
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    upper = np.triu_indices(len(unit), 1)
    similarity = (unit @ unit.T)[upper]
    same = (ids[:, None] == ids[None])[upper]
    if same.all() or not same.any():
        return {"auc": float("nan"), "same": float("nan"), "other": float("nan"),
                "faces": int(ok.sum())}
    return {"auc": float(roc_auc_score(same, similarity)),
            "same": float(similarity[same].mean()), "other": float(similarity[~same].mean()),
            "faces": int(ok.sum())}
