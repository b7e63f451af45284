"""Reading what the features and latents stages wrote: face crops, per-clip latents, Head-Kps
images and audio windows, as arrays."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq

from components.errors import SvpError
from components.features.audio import N_HIDDEN, WIDTH, audio_window, relative_to_silence
from components.features.head_kps import render_head_kps
from components.paths import resolve


def read_index(folder: str | Path, split: str | None = None):
    """A features or latents folder's `index.parquet` (one split, or all), as pandas."""
    path = Path(folder) / "index.parquet"
    if not path.is_file():
        raise SvpError(f"{path}: index not found (run the stage that writes {Path(folder)})")
    index = pq.read_table(path).to_pandas()
    return index if split is None else index[index["split"] == split].reset_index(drop=True)


def decode_jpegs(blobs) -> np.ndarray:
    """JPEG bytes -> uint8 RGB (N, H, W, 3)."""
    return np.stack([cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
                     for b in blobs])


def face_crops(features_dir: str | Path, split: str, limit: int | None = None,
               rng: np.random.Generator | None = None) -> np.ndarray:
    """The features stage's face crops of one split (every frame, or `limit` drawn with `rng`)."""
    index = read_index(features_dir, split)
    if index.empty:
        raise SvpError(f"{features_dir}: no {split} clips")
    crops = []
    for row in index.itertuples():
        table = pq.read_table(resolve(row.features_path, features_dir), columns=["crop_jpeg"])
        crops.extend(table["crop_jpeg"].to_pylist())
    if limit is not None and limit < len(crops):
        rng = rng or np.random.default_rng(0)
        crops = [crops[i] for i in sorted(rng.choice(len(crops), limit, replace=False))]
    return decode_jpegs(crops)


@dataclass(frozen=True)
class Clip:
    """One clip in the generator's crop: latents, frames, landmarks, Head-Kps, audio."""

    sample_id: str
    identity: str
    emotion: str | None
    group: str
    latents: np.ndarray  # (T, C, h, w) float16, scaled
    kps: np.ndarray  # (T, 8, 2) crop pixels
    landmarks: np.ndarray  # (T, 68, 2) crop pixels
    audio: np.ndarray  # (T, N_HIDDEN, 2, WIDTH) float16 Whisper states per frame, relative to
    # silence's (`relative_to_silence`)
    jpegs: list[bytes]  # the crop's frames

    def __len__(self) -> int:
        return len(self.latents)

    def frames(self, index) -> np.ndarray:
        return decode_jpegs([self.jpegs[i] for i in np.atleast_1d(index)])


@dataclass(frozen=True)
class Sample:
    """Which frames of which clips one training sample, stage-check item or evaluation case is
    made of (clip indices into one list of clips)."""

    target: int  # the clip whose frames are generated and compared, and its Head-Kps
    start: int  # the first target frame
    reference: int  # the clip of the reference frame
    reference_frame: int = 0
    style: int | None = None  # the clip whose style prior is drawn (None: the target's)
    other_speech: int | None = None  # the clip whose speech drives the "other speech" rows


@lru_cache(maxsize=8192)
def _read_clip(latents_path: str, features_path: str | None, whisper: str | None,
               fps: float) -> tuple:
    table = pq.read_table(latents_path)
    shape = tuple(table.schema.metadata[b"svp.latent_shape"].decode().split(","))
    latents = np.stack(table["latent"].to_numpy(zero_copy_only=False)).astype(np.float16)
    kps = np.stack(table["head_kps"].to_numpy(zero_copy_only=False)).reshape(-1, 8, 2)
    landmarks = np.stack(table["landmarks"].to_numpy(zero_copy_only=False)).reshape(-1, 68, 2)
    audio = np.zeros((0, N_HIDDEN, 2, WIDTH), np.float16)
    if features_path is not None:
        audio = np.stack(pq.read_table(features_path, columns=["audio"])["audio"].to_numpy(
            zero_copy_only=False)).reshape(-1, N_HIDDEN, 2, WIDTH)[: len(latents)]
        audio = relative_to_silence(audio, whisper, fps).astype(np.float16)
    return (latents.reshape(len(latents), *map(int, shape)), kps, landmarks, audio,
            table["image_jpeg"].to_pylist())


def load_clips(latents_dir: str | Path, features_dir: str | Path, split: str) -> list[Clip]:
    """Every clip of a split that the latents stage encoded (read once per process). The
    `procedural` split (still shots of procedural faces) has no audio."""
    index = read_index(latents_dir, split)
    features = read_index(features_dir).set_index("sample_id")["features_path"]
    settings = json.loads((Path(features_dir) / "config.json").read_text())
    whisper, fps = settings["whisper_checkpoint"], float(settings["fps"])
    clips = []
    for row in index.itertuples():
        audio_from = None if split == "procedural" else \
            str(resolve(features.loc[row.sample_id], features_dir))
        latents, kps, landmarks, audio, jpegs = _read_clip(
            str(resolve(row.latents_path, latents_dir)), audio_from, whisper, fps)
        emotion = row.emotion if isinstance(row.emotion, str) else None
        clips.append(Clip(row.sample_id, row.identity, emotion, row.style_group, latents,
                          kps, landmarks, audio, jpegs))
    if not clips:
        raise SvpError(f"{latents_dir}: no {split} clips")
    return clips


def kps_drawings(kps: np.ndarray, size: int) -> np.ndarray:
    """(..., 8, 2) keypoints -> (..., 3, size, size) uint8 Head-Kps images."""
    flat = kps.reshape(-1, 8, 2)
    images = np.stack([render_head_kps(k, size) for k in flat])
    return images.transpose(0, 3, 1, 2).reshape(*kps.shape[:-2], 3, size, size)


def kps_images(kps: np.ndarray, size: int) -> np.ndarray:
    """(..., 8, 2) keypoints -> (..., 3, size, size) float32 Head-Kps images in [0, 1]."""
    return kps_drawings(kps, size).astype(np.float32) / 255


def audio_windows(audio: np.ndarray, frames, k: int) -> np.ndarray:
    """(len(frames), N_HIDDEN, 2k, WIDTH) float32: each frame's Whisper window of `k` frames
    (`Denoiser.audio_frames`: the model's window, whatever the frame rate)."""
    return np.stack([audio_window(audio, int(t), seconds=k, fps=1) for t in frames]).astype(
        np.float32)
