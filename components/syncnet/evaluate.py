"""How well a SyncNet reads lip sync, on the held-out identities' real clips.

Each test clip is cut into `window`-frame pieces. For each piece: the AV offset the scoring
finds with the clip's own speech (0 +- 1 frame when the network reads sync), and Sync-C / Sync-D
with its own speech against the same identity's other clip's speech at the same place (what
out-of-sync speech scores).
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from components.syncnet.data import SyncClip
from components.syncnet.model import SyncNet
from components.syncnet.score import MFCC_PER_FRAME, score_windows


def _pieces(clip: SyncClip, window: int) -> range:
    frames = min(len(clip.faces), len(clip.cepstra) // MFCC_PER_FRAME)
    return range(0, frames - window + 1, window)


def _other(clips: list[SyncClip], i: int) -> SyncClip:
    """The next clip of the same identity (another sentence or emotion), else the next clip."""
    later = clips[i + 1:] + clips[:i]
    return next((c for c in later if c.identity == clips[i].identity), later[0])


def _mean_se(values: np.ndarray) -> dict[str, float]:
    se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")
    return {"mean": round(float(values.mean()), 4), "se": round(float(se), 4)}


def held_out_quality(model: SyncNet, clips: list[SyncClip], window: int) -> dict:
    if len(clips) < 2:
        raise ValueError("SyncNet evaluation needs at least two held-out clips")
    offsets, own_c, own_d, other_c, other_d = [], [], [], [], []
    for i, clip in enumerate(clips):
        other = _other(clips, i)
        for start in _pieces(clip, window):
            faces = clip.faces[start:start + window]
            audio = slice(MFCC_PER_FRAME * start, MFCC_PER_FRAME * (start + window))
            own = score_windows(model, faces, clip.cepstra[audio])
            offsets.append(own.offset)
            own_c.append(own.confidence)
            own_d.append(own.distance)
            wrong = other.cepstra[audio] if len(other.cepstra) >= audio.stop else \
                other.cepstra[:MFCC_PER_FRAME * window]
            mismatched = score_windows(model, faces, wrong)
            other_c.append(mismatched.confidence)
            other_d.append(mismatched.distance)
    if not offsets:
        raise ValueError(f"no held-out clip has {window} frames with speech")
    offsets = np.array(offsets)
    own_c, other_c = np.array(own_c), np.array(other_c)
    own_d, other_d = np.array(own_d), np.array(other_d)
    return {"windows": len(offsets), "window_frames": window,
            "offset_within_1": round(float((np.abs(offsets) <= 1).mean()), 4),
            "offset_exact": round(float((offsets == 0).mean()), 4),
            "sync_c": {"own_speech": _mean_se(own_c), "other_speech": _mean_se(other_c),
                       "gap": _mean_se(own_c - other_c)},
            "sync_d": {"own_speech": _mean_se(own_d), "other_speech": _mean_se(other_d),
                       "gap": _mean_se(other_d - own_d)},
            "offset_counts": {str(o): int(n) for o, n in Counter(offsets.tolist()).items()}}
