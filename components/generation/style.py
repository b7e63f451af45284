"""Styles for generation: the intrinsic style prior of a style reference video (landmarks ->
expression coefficients -> the trained style extractor, with the video's own speech), saved to
and read from a file, interpolated between two, and drawn from.

A style is the prior's mean and standard deviation. A draw is `mean + std * noise`, the noise
from the seed, so `--style-mix 0` and `1` are exactly the single styles (mixing interpolates
mean and standard deviation linearly and keeps the noise).

A video's expression is measured against the training set's average face: the speaker's own
average over all their clips, which training used, is not known for one video, so a speaker's
face shape counts as a little style.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

from components.atomic import atomic_path
from components.errors import SvpError
from components.features import audio as whisper_features
from components.features.expression import ExpressionBasis, head_pose
from components.features.landmarks import DlibLandmarks
from components.generation.inputs import read_speech, read_video_landmarks
from components.style.data import StyleClip, whole_clip_batch
from components.style.extractor import StyleExtractor, sample_style
from components.training.seeds import torch_generator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Style:
    mean: np.ndarray  # (d,) float32
    std: np.ndarray  # (d,) float32
    source: str

    @classmethod
    def from_prior(cls, mean: np.ndarray, logvar: np.ndarray, source: str) -> Style:
        """The style of a prior given as the extractor gives it: mean and log-variance."""
        return cls(mean.astype(np.float32), np.exp(0.5 * logvar).astype(np.float32), source)

    def draw(self, seed: int, use_mean: bool = False, index: int = 0) -> np.ndarray:
        """The extractor's own draw (`sample_style`), from the seed's style stream (never the
        latent noise's); `index`: the video's draw in that stream (evaluate's cases)."""
        if use_mean:
            return self.mean.copy()
        logvar = torch.from_numpy(2 * np.log(self.std))
        drawn = sample_style(torch.from_numpy(self.mean), logvar,
                             torch_generator(seed, "style", index))
        return drawn.numpy().astype(np.float32)


def mix(a: Style, b: Style, weight: float) -> Style:
    """`weight` 0 is `a`, 1 is `b`."""
    if a.mean.shape != b.mean.shape:
        raise SvpError(f"{b.source}: a {len(b.mean)}-wide style cannot mix with {a.source}'s "
                       f"{len(a.mean)}")
    if not 0.0 <= weight <= 1.0:
        raise SvpError(f"--style-mix must lie in [0, 1], got {weight}")
    return Style(((1 - weight) * a.mean + weight * b.mean).astype(np.float32),
                 ((1 - weight) * a.std + weight * b.std).astype(np.float32),
                 f"{1 - weight:g} x {a.source} + {weight:g} x {b.source}")


def save_style(style: Style, path: str | Path, extractor: str) -> None:
    with atomic_path(path) as tmp:
        save_file({"mean": style.mean, "logvar": 2 * np.log(style.std)}, str(tmp),
                  metadata={"svp": json.dumps({"source": style.source, "extractor": extractor})})


def load_style(path: str | Path) -> Style:
    path = Path(path)
    if not path.is_file():
        raise SvpError(f"{path}: style file not found")
    try:
        data = load_file(str(path))
        mean, logvar = data["mean"].astype(np.float32), data["logvar"].astype(np.float32)
    except Exception as err:  # not a safetensors file, or not ours
        raise SvpError(f"{path}: not a style file written by `svp style extract` "
                       f"({' '.join(str(err).split())[:100]})") from None
    if mean.shape != logvar.shape or mean.ndim != 1 or not np.isfinite(logvar).all():
        raise SvpError(f"{path}: not a style file written by `svp style extract`")
    return Style.from_prior(mean, logvar, path.name)


@torch.no_grad()
def style_from_video(path: str | Path, model: StyleExtractor, basis: ExpressionBasis,
                     detector: DlibLandmarks, fps: float, whisper_checkpoint: str | None,
                     min_dbfs: float) -> Style:
    """The prior of a style reference video: its expression and its own speech."""
    landmarks, size = read_video_landmarks(path, detector, fps, "style video")
    pose = head_pose(landmarks, size)
    expression = basis.coefficients(landmarks, pose, basis.mean_shape)
    width = whisper_features.N_HIDDEN * 2 * whisper_features.WIDTH
    try:
        speech = read_speech(path, fps, whisper_checkpoint, min_dbfs, float("inf"))
        n = min(len(expression), speech.n_frames)
        audio, heard = speech.features[:n].reshape(n, -1), True
    except SvpError as err:  # no usable sound track: the extractor reads the expression alone
        log.info("%s; the style comes from the expression alone", err)
        n = len(expression)
        audio, heard = np.zeros((n, width), np.float16), False
    clip = StyleClip(Path(path).name, "", None, None, "", expression[:n], audio)
    batch = whole_clip_batch([clip], model.config.max_frames)
    mean, logvar = model(batch["expression"], batch["audio"], batch["valid"],
                         torch.ones(1, dtype=torch.bool), torch.tensor([heard]))
    return Style(mean[0].numpy(), torch.exp(0.5 * logvar[0]).numpy(), Path(path).name)
