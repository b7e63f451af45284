"""The paper's two protocols on the held-out identities, and the rows each is measured for.

- Reconstruction (Table 1): a test clip regenerated from its own first frame, driven by its own
  audio, Head-Kps and style; the clip is the target.
- Style transfer (Table 2): the first frame of the same identity's neutral clip is the
  reference; an emotional clip's audio, Head-Kps and style drive it; the emotional clip is the
  target. Emotions come one after another, identities alternating and the most intense level
  first, so a few cases cover many.

Each case is the target's liveliest window (`frames` frames where its mouth moves most: where
lip sync can show). Rows: the full model (the paper's sampler); "fast" (the full model with the
generator's fast sampler: what `svp generate` runs by default); "w/o style" (style attention
off); "mean style" (the prior's mean, no sampling); "other speech" (the full model driven by the
same speaker's clip whose mouth moves least like the target's: what wrong lip sync scores);
"reference repeated" (the reference frame as every frame). The three ablation rows (w/o style,
mean style, other speech) are sampled with `evaluate.ablation_sampler` (default the fast one,
a fifth of the paper sampler's passes) and the checks compare them with the full model sampled
the same way.
"""

from __future__ import annotations

from itertools import zip_longest

from components.diffusion.frames import Clip, Sample
from components.evaluation.stage_checks import alternate_identities, liveliest_window, other_speech

PROTOCOLS = ("reconstruction", "style_transfer")
ROWS = ("full", "fast", "no_style", "mean_style", "other_speech", "reference_repeated",
        "vae_ceiling")
ROW_TITLES = {"full": "SVP (full)", "fast": "SVP, fast sampler", "no_style": "w/o style",
              "mean_style": "mean style (no sampling)", "other_speech": "other speech",
              "reference_repeated": "reference repeated",
              "vae_ceiling": "real clips through the VAE (ceiling)",
              "real": "real clips (ceiling)"}


def _order(clips: list[Clip]) -> list[int]:
    return sorted(range(len(clips)), key=lambda i: clips[i].sample_id)


def _case(clips: list[Clip], order: list[int], target: int, reference: int,
          frames: int) -> Sample:
    start = liveliest_window(clips[target], frames)
    other = other_speech(clips, order, target, start, frames)
    return Sample(target, start, reference, other_speech=target if other is None else other)


def reconstruction_cases(clips: list[Clip], n: int, frames: int) -> list[Sample]:
    order = _order(clips)
    return [_case(clips, order, i, i, frames)
            for i in alternate_identities(order, clips)[:n]]


def style_transfer_cases(clips: list[Clip], n: int, frames: int,
                         levels: dict[str, int] | None = None) -> list[Sample]:
    """Emotional clips whose identity has a neutral clip, one emotion after another, the most
    intense level first (sample id -> MEAD level: where the style has the most to show)."""
    order = _order(clips)
    neutral = {clips[i].identity: i for i in reversed(order) if clips[i].emotion == "neutral"}
    by_emotion: dict[str, list[int]] = {}
    ranked = sorted(alternate_identities(order, clips),
                    key=lambda i: -(levels or {}).get(clips[i].sample_id, 0))  # stable
    for i in ranked:
        if clips[i].emotion not in (None, "neutral") and clips[i].identity in neutral:
            by_emotion.setdefault(clips[i].emotion, []).append(i)
    queue = [i for row in zip_longest(*by_emotion.values()) for i in row if i is not None]
    return [_case(clips, order, i, neutral[clips[i].identity], frames)
            for i in queue[:n]]
