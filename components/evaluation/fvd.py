"""FVD: the Fréchet distance between Kinetics-400 I3D embeddings of two sets of 16-frame clips.

As the original FVD (google-research `frechet_video_distance`, used by DIGAN and StyleGAN-V):
each clip's frames resized to 224x224 with bilinear interpolation, scaled `2 x / 255 - 1` to
[-1, 1], and embedded as the I3D's 400 time-averaged logits before the softmax (the tf-hub
module's `RGB/inception_i3d/Mean:0`). The reference resizes with TF1's legacy
`resize_bilinear` (no half-pixel centres), this with torch's (half-pixel centres): for clips
not already 224x224, values are comparable within this project, not to the decimal with papers.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.evaluation.frechet import frechet_distance
from components.evaluation.i3d import N_CLASSES, InceptionI3d, default_i3d_path, load_i3d
from components.precision import autocast

CLIP_FRAMES = 16
I3D_SIZE = 224


def video_clips(video: np.ndarray, clip_frames: int = CLIP_FRAMES) -> np.ndarray:
    """Consecutive, non-overlapping clips (T // clip_frames, clip_frames, H, W, 3) of a video
    (T, H, W, 3); the frames after the last whole clip are dropped."""
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video_clips: a video must be (T, H, W, 3), got {video.shape}")
    if len(video) < clip_frames:
        raise ValueError(f"video_clips: {len(video)} frames, fewer than one {clip_frames}-frame "
                         "clip")
    n = len(video) // clip_frames
    return video[:n * clip_frames].reshape(n, clip_frames, *video.shape[1:])


@functools.cache
def _cached_i3d(path: Path) -> InceptionI3d:
    return load_i3d(path)


class I3DFeatures:
    """uint8 RGB clips (N, 16, H, W, 3) -> (N, 400) float64 I3D logits. The network loads on
    first use, once per process and path; `bf16`: under bf16 autocast (1.7x faster with AMX;
    FVD between two sets of held-out clips moved 0.3-0.7%)."""

    def __init__(self, path: str | Path | None = None, bf16: bool = False) -> None:
        self.path = Path(path) if path is not None else None
        self.bf16 = bf16

    @torch.inference_mode()
    def __call__(self, clips: np.ndarray, batch_size: int = 4) -> np.ndarray:
        # 4 clips a call: the same features as 8, 1.3x faster on 2 cores (smaller activations)
        if not isinstance(clips, np.ndarray) or clips.dtype != np.uint8 or clips.ndim != 5 \
                or clips.shape[1] != CLIP_FRAMES or clips.shape[-1] != 3:
            raise ValueError(f"I3D features need uint8 clips (N, {CLIP_FRAMES}, H, W, 3), got "
                             f"{getattr(clips, 'dtype', type(clips).__name__)} "
                             f"{getattr(clips, 'shape', '')}")
        model = _cached_i3d(self.path or default_i3d_path())
        out = []
        for start in range(0, len(clips), batch_size):
            batch = torch.from_numpy(clips[start:start + batch_size])
            n, t, h, w, c = batch.shape
            x = batch.reshape(n * t, h, w, c).permute(0, 3, 1, 2).float()
            if (h, w) != (I3D_SIZE, I3D_SIZE):
                x = F.interpolate(x, size=(I3D_SIZE, I3D_SIZE), mode="bilinear",
                                  align_corners=False)
            x = x.reshape(n, t, c, I3D_SIZE, I3D_SIZE).transpose(1, 2)  # (N, C, T, H, W)
            with autocast(self.bf16, x.device):
                out.append(model(2 * x / 255 - 1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, N_CLASSES))


def fvd(real_clips: np.ndarray, fake_clips: np.ndarray,
        features: I3DFeatures | None = None) -> float:
    """FVD between two uint8 clip sets (N, 16, H, W, 3), each with at least 2 clips."""
    features = features or I3DFeatures()
    return frechet_distance(features(real_clips), features(fake_clips))
