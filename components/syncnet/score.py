"""Sync-C and Sync-D by syncnet_python's procedure (`SyncNetInstance.evaluate`).

Every 5-frame face window is embedded with the 0.2 s of MFCCs under it; each face embedding is
compared with the audio embeddings up to `vshift` frames earlier and later (zero-padded past the
ends, as the original does); the mean distance per offset gives the AV offset (its minimum),
Sync-D (the minimum) and Sync-C (the median minus the minimum). A clip in sync has its minimum
at offset 0, well below the median.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from python_speech_features import mfcc as speech_mfcc
from scipy.signal import resample_poly

from components.syncnet.model import FACE_FRAMES, MFCC_STEPS, SyncNet

SAMPLE_RATE = 16000
MFCC_PER_FRAME = 4  # 100 Hz MFCCs per 25 fps frame
VSHIFT = 15  # frames searched either side


@dataclass(frozen=True)
class SyncScore:
    offset: int  # frames the audio leads (+) or lags (-) the mouth
    confidence: float  # Sync-C: median minus minimum of the mean distances
    distance: float  # Sync-D: the minimum mean distance
    distances: np.ndarray  # (2 * vshift + 1,) mean distance per offset, -vshift .. +vshift


def mfcc(audio: np.ndarray, rate: int) -> np.ndarray:
    """(N,) float samples in [-1, 1] -> (T, 13) MFCCs at 100 Hz, as syncnet_python computes
    them from 16 kHz int16 samples."""
    if rate != SAMPLE_RATE:
        audio = resample_poly(audio, SAMPLE_RATE, rate)
    return speech_mfcc(np.asarray(audio, np.float64) * 32768.0, SAMPLE_RATE).astype(np.float32)


def face_windows(frames: np.ndarray, size: int, region: str = "full") -> np.ndarray:
    """(T, H, W, 3) uint8 RGB face crops -> (T, 3, size, size) float32 BGR in [0, 255]: the
    whole crop (syncnet_python), or its lower centre quarter ("mouth": the lower half of the
    face, where a small crop's few mouth pixels would otherwise vanish in the first strides)."""
    if region == "mouth":
        h, w = frames.shape[1:3]
        frames = frames[:, h // 2:, w // 4:w // 4 + (h - h // 2)]
    resized = [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA if f.shape[0] > size
                          else cv2.INTER_LINEAR) if f.shape[:2] != (size, size) else f
               for f in frames]
    return np.ascontiguousarray(np.stack(resized)[..., ::-1].transpose(0, 3, 1, 2),
                                dtype=np.float32)


def n_windows(n_frames: int, n_mfcc: int) -> int:
    """syncnet_python's count: min(frames, audio frames) - 5 (16 kHz audio of k frames holds
    4 k - 1 MFCC steps)."""
    return min(n_frames, (n_mfcc + 1) // MFCC_PER_FRAME) - FACE_FRAMES


def window_batch(faces: np.ndarray, cepstra: np.ndarray, starts: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Face windows (B, 3, 5, S, S) and MFCC windows (B, 1, 13, 20) starting at `starts`
    (video frames; the audio at 4x)."""
    face = np.stack([faces[s:s + FACE_FRAMES] for s in starts]).transpose(0, 2, 1, 3, 4)
    audio = np.stack([cepstra[MFCC_PER_FRAME * s:MFCC_PER_FRAME * s + MFCC_STEPS].T
                      for s in starts])[:, None]
    return torch.from_numpy(np.ascontiguousarray(face)), torch.from_numpy(audio)


@torch.no_grad()
def embed(model: SyncNet, faces: np.ndarray, cepstra: np.ndarray,
          batch: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Face and audio embeddings of every window of one clip."""
    n = n_windows(len(faces), len(cepstra))
    face_out, audio_out = [], []
    for first in range(0, max(n, 0), batch):
        face, audio = window_batch(faces, cepstra, np.arange(first, min(n, first + batch)))
        face_out.append(model.forward_face(face))
        audio_out.append(model.forward_audio(audio))
    if not face_out:
        width = model.config.embed_dim
        return torch.zeros(0, width), torch.zeros(0, width)
    return torch.cat(face_out), torch.cat(audio_out)


def offset_distances(face: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> np.ndarray:
    """(2 * vshift + 1,) mean distance per offset (syncnet_python's `calc_pdist`, averaged)."""
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))
    dists = torch.stack([torch.nn.functional.pairwise_distance(
        face[i:i + 1].expand(2 * vshift + 1, -1), padded[i:i + 2 * vshift + 1])
        for i in range(len(face))])
    return dists.mean(0).numpy()


def sync_score(model: SyncNet, frames: np.ndarray, audio: np.ndarray, rate: int,
               vshift: int = VSHIFT) -> SyncScore:
    """A clip's faces (T, H, W, 3) uint8 RGB and its speech -> offset, Sync-C, Sync-D.
    Needs at least 5 frames and their 0.2 s of speech."""
    return score_windows(model, face_windows(frames, model.config.face_size,
                                             model.config.face_region),
                         mfcc(audio, rate), vshift)


def score_windows(model: SyncNet, faces: np.ndarray, cepstra: np.ndarray,
                  vshift: int = VSHIFT) -> SyncScore:
    """`sync_score` on faces already prepared (`face_windows`) and MFCCs (`mfcc`)."""
    if n_windows(len(faces), len(cepstra)) < 1:
        raise ValueError(f"sync_score: {len(faces)} frames and {len(cepstra) / 100:.2f} s of "
                         f"speech hold no {FACE_FRAMES}-frame window")
    distances = offset_distances(*embed(model, faces, cepstra), vshift)
    best = int(np.argmin(distances))
    return SyncScore(offset=vshift - best,
                     confidence=float(np.median(distances) - distances[best]),
                     distance=float(distances[best]), distances=distances)
