"""SyncNet data: the features stage's face crops with the MFCCs of their clip's own speech, and
training batches of in-sync windows with shifted ones from the same clip as hard negatives."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from components.diffusion.frames import decode_jpegs, read_index
from components.errors import SvpError
from components.media import decode_audio
from components.paths import resolve
from components.syncnet.model import FACE_FRAMES
from components.syncnet.score import (
    MFCC_PER_FRAME,
    SAMPLE_RATE,
    face_windows,
    mfcc,
    n_windows,
    window_batch,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncClip:
    sample_id: str
    identity: str
    faces: np.ndarray  # (T, 3, S, S) float32 BGR in [0, 255]
    cepstra: np.ndarray  # (4 T, 13) MFCCs of the clip's speech
    speech: np.ndarray  # (N,) float32 samples at 16 kHz

    @property
    def windows(self) -> int:
        return n_windows(len(self.faces), len(self.cepstra))


def load_sync_clips(features_dir: str | Path, split: str, face_size: int, face_region: str,
                    min_windows: int = 1, media_root: str | Path | None = None
                    ) -> list[SyncClip]:
    """One split's clips: face crops resized to `face_size` and the clip's speech (media paths
    resolved against `media_root`, default the project root: a Ray worker passes it)."""
    index = read_index(features_dir, split)
    clips = []
    for row in index.itertuples():
        table = pq.read_table(resolve(row.features_path, features_dir), columns=["crop_jpeg"])
        frames = decode_jpegs(table["crop_jpeg"].to_pylist())
        speech, _ = decode_audio(resolve(row.video_path, media_root), SAMPLE_RATE)
        clip = SyncClip(row.sample_id, row.identity, face_windows(frames, face_size, face_region),
                        mfcc(speech, SAMPLE_RATE), speech)
        if clip.windows < min_windows:
            log.warning("skipping %s: %d frames with speech, fewer than %d",
                        row.sample_id, min(len(frames), len(clip.cepstra) // MFCC_PER_FRAME),
                        min_windows + FACE_FRAMES)
            continue
        clips.append(clip)
    if not clips:
        raise SvpError(f"{features_dir}: no {split} clip long enough for SyncNet "
                       f"(at least {min_windows + FACE_FRAMES} frames with speech)")
    return clips


def sample_batch(clips: list[SyncClip], batch: int, negatives: int, min_shift: int,
                 max_shift: int, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """`batch` in-sync windows from random clips, and for each `negatives` windows of its own
    clip's speech shifted by min_shift .. max_shift frames either way."""
    faces, audio, shifted = [], [], []
    for _ in range(batch):
        clip = clips[rng.integers(len(clips))]
        start = int(rng.integers(clip.windows))
        face, own = window_batch(clip.faces, clip.cepstra, np.array([start]))
        choices = [s for s in range(clip.windows)
                   if min_shift <= abs(s - start) <= max_shift] or \
            [s for s in range(clip.windows) if s != start]
        if not choices:
            raise SvpError(f"{clip.sample_id}: too short for shifted negatives")
        starts = rng.choice(choices, negatives, replace=len(choices) < negatives)
        _, other = window_batch(clip.faces, clip.cepstra, starts)
        faces.append(face)
        audio.append(own)
        shifted.append(other)
    return {"faces": torch.cat(faces), "audio": torch.cat(audio),
            "shifted": torch.stack(shifted)}  # (B, K, 1, 13, 20)
