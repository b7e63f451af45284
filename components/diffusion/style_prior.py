"""The intrinsic style prior of every clip, from the trained style extractor (a `save_pretrained`
folder or a registry URI such as `models:/svp-style-extractor/3`), run once per clip on its whole
expression and audio sequence (up to the extractor's `max_frames`)."""

from __future__ import annotations

import numpy as np
import torch

from components.errors import SvpError
from components.style.data import load_clips as load_style_clips
from components.style.data import whole_clip_batch
from components.style.extractor import StyleExtractor
from components.training.registry import load_model_from


def load_style_model(source: str) -> StyleExtractor:
    return load_model_from(source, StyleExtractor)


@torch.no_grad()
def style_priors(model: StyleExtractor, features_dir: str, sample_ids: list[str],
                 style_dim: int) -> np.ndarray:
    """(len(sample_ids), 2, d) float32: the prior's mean and log-variance per clip."""
    if model.config.d_model != style_dim:
        raise SvpError(f"the style extractor is {model.config.d_model} wide, "
                       f"diffusion.style.style_dim says {style_dim}")
    by_id = {c.sample_id: c for c in load_style_clips(features_dir)}
    missing = [s for s in sample_ids if s not in by_id]
    if missing:
        raise SvpError(f"{features_dir}: no expression/audio for {missing[0]} "
                       f"({len(missing)} clips) to draw its style from")
    out = np.zeros((len(sample_ids), 2, style_dim), np.float32)
    for start in range(0, len(sample_ids), 32):
        chunk = [by_id[s] for s in sample_ids[start:start + 32]]
        batch = whole_clip_batch(chunk, model.config.max_frames)
        present = torch.ones(len(chunk), dtype=torch.bool)
        mean, logvar = model(batch["expression"], batch["audio"], batch["valid"], present,
                             present)
        out[start:start + len(chunk), 0] = mean.numpy()
        out[start:start + len(chunk), 1] = logvar.numpy()
    return out
