"""Style training data: clips from the features stage, and batches in which every anchor has
positives (P style groups x K windows each)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch

from components.errors import SvpError
from components.paths import resolve

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StyleClip:
    sample_id: str
    identity: str
    emotion: str | None
    level: int | None
    group: str
    expression: np.ndarray  # (T, E) float32
    audio: np.ndarray  # (T, 3840) float16


def load_clips(features_dir: str | Path, split: str | None = None,
               min_frames: int = 8) -> list[StyleClip]:
    """The clips of one split; a clip with NaN rows keeps its finite frames, and one with too
    few finite frames or a missing modality is skipped with a logged reason."""
    root = Path(features_dir)
    index_path = root / "index.parquet"
    if not index_path.is_file():
        raise SvpError(f"{index_path}: features index not found (run `svp data features`)")
    index = pq.read_table(index_path).to_pandas()
    if split:
        index = index[index["split"] == split]
    expression = pq.read_table(root / "expression.parquet").to_pandas().groupby("sample_id")
    clips = []
    for row in index.itertuples():
        if row.sample_id not in expression.groups:
            log.warning("skipping %s: no expression rows", row.sample_id)
            continue
        exp = np.stack(expression.get_group(row.sample_id).sort_values("frame")["expression"]
                       .to_numpy()).astype(np.float32)
        table = pq.read_table(resolve(row.features_path, root), columns=["audio"])
        audio = np.stack(table["audio"].to_numpy(zero_copy_only=False))
        if len(audio) != len(exp):
            log.warning("skipping %s: %d audio frames but %d expression frames",
                        row.sample_id, len(audio), len(exp))
            continue
        if not np.abs(audio).any() or not np.isfinite(exp).any():
            log.warning("skipping %s: a modality is missing (all-zero audio or no expression)",
                        row.sample_id)
            continue
        finite = np.isfinite(exp).all(1) & np.isfinite(audio).all(1)
        if finite.sum() < min_frames:
            log.warning("skipping %s: only %d finite frames", row.sample_id, finite.sum())
            continue
        clips.append(StyleClip(row.sample_id, row.identity, row.emotion,
                               None if row.level != row.level else int(row.level),
                               row.style_group, exp[finite], audio[finite]))
    return clips


def check_positives(clips: list[StyleClip]) -> None:
    groups = {c.group for c in clips}
    if not clips or len(groups) < 2:
        raise SvpError(f"style training needs at least 2 style groups, got {len(groups)}")


def window(clip: StyleClip, length: int, rng: np.random.Generator):
    """A random window of up to `length` frames, padded; returns exp, audio, valid."""
    n = len(clip.expression)
    start = int(rng.integers(0, max(1, n - length + 1)))
    take = min(length, n)
    exp = np.zeros((length, clip.expression.shape[1]), np.float32)
    aud = np.zeros((length, clip.audio.shape[1]), np.float32)
    exp[:take] = clip.expression[start:start + take]
    aud[:take] = clip.audio[start:start + take]
    valid = np.arange(length) < take
    return exp, aud, valid


def sample_batch(clips: list[StyleClip], n_groups: int, per_group: int, length: int,
                 rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """`n_groups` style groups x `per_group` windows (from any of the group's clips)."""
    by_group: dict[str, list[StyleClip]] = {}
    for clip in clips:
        by_group.setdefault(clip.group, []).append(clip)
    names = sorted(by_group)
    chosen = rng.choice(len(names), size=min(n_groups, len(names)), replace=False)
    exps, auds, valids, labels = [], [], [], []
    for g in chosen:
        members = by_group[names[g]]
        for _ in range(per_group):
            e, a, v = window(members[int(rng.integers(len(members)))], length, rng)
            exps.append(e)
            auds.append(a)
            valids.append(v)
            labels.append(g)
    return {"expression": torch.from_numpy(np.stack(exps)),
            "audio": torch.from_numpy(np.stack(auds)),
            "valid": torch.from_numpy(np.stack(valids)),
            "group": torch.tensor(labels)}


def whole_clip_batch(clips: list[StyleClip], max_frames: int) -> dict[str, torch.Tensor]:
    """Every clip as one padded row (its first `max_frames` frames), for evaluation."""
    length = min(max_frames, max(len(c.expression) for c in clips))
    rng = np.random.default_rng(0)
    rows = [window(StyleClip(c.sample_id, c.identity, c.emotion, c.level, c.group,
                             c.expression[:length], c.audio[:length]), length, rng)
            for c in clips]
    return {"expression": torch.from_numpy(np.stack([r[0] for r in rows])),
            "audio": torch.from_numpy(np.stack([r[1] for r in rows])),
            "valid": torch.from_numpy(np.stack([r[2] for r in rows]))}
