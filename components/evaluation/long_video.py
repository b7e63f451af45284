"""The long-video case: does a long video still show the same person, in sync, at its end?

One held-out identity (the first reconstruction case's): the reference is its first test clip's
first frame; speech, Head-Kps and style are its test clips one after another, repeated until
`seconds` (the peers' users complain about drift over a minute: the full profile's 60 s). The
video is made in one call with the generator's fastest sampler, then cut into
`segment_s` segments. Per segment: CSIM of every `csim_every`-th frame to the reference, and
Sync-C / Sync-D with the segment's speech. The drift is the least-squares slope of each over
time, per minute; a video that loses its face or its sync shows a negative CSIM or Sync-C slope.
The real clips, joined the same way, are measured the same way: their level and slope are the
ceiling (Sync-C depends on the segment's length, so only the same segments compare).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from components.diffusion.frames import Clip
from components.generation.pipeline import GenerationInputs
from components.generation.style import Style
from components.syncnet.score import SAMPLE_RATE, mfcc


@dataclass(frozen=True)
class LongCase:
    identity: str
    inputs: GenerationInputs
    speech: np.ndarray  # 16 kHz samples, frame-aligned with the inputs
    real: np.ndarray  # (T, R, R, 3) uint8: the clips' own frames, joined the same way
    clips: list[str]  # the sample ids, in the order they were joined


def long_case(clips: list[Clip], identity: str, seconds: float, fps: float,
              speech_of: Callable[[str], np.ndarray], style: Style, seed: int) -> LongCase:
    """The identity's test clips joined (and repeated) to `seconds`; `speech_of(sample_id)` is
    the clip's speech at 16 kHz."""
    own = [c for c in clips if c.identity == identity]
    n = round(seconds * fps)
    per_frame = SAMPLE_RATE / fps
    kps, audio, speech, frames, used = [], [], [], [], []
    total = 0
    while total < n:
        clip = own[len(used) % len(own)]
        samples = speech_of(clip.sample_id)[:round(len(clip) * per_frame)]
        speech.append(np.pad(samples, (0, round(len(clip) * per_frame) - len(samples))))
        kps.append(clip.kps)
        audio.append(clip.audio)
        frames.append(clip.frames(np.arange(len(clip))))
        used.append(clip.sample_id)
        total += len(clip)
    reference = own[0].frames(0)[0]
    inputs = GenerationInputs(reference, np.concatenate(kps)[:n], np.concatenate(audio)[:n],
                              style.draw(seed))
    return LongCase(identity, inputs, np.concatenate(speech)[:round(n * per_frame)],
                    np.concatenate(frames)[:n], used)


def _slope_per_minute(times_s: np.ndarray, values: np.ndarray) -> float:
    ok = np.isfinite(values)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(times_s[ok] / 60.0, values[ok], 1)[0])


def drift(measure, frames: np.ndarray, case: LongCase, fps: float, segment_s: float) -> dict:
    """Per `segment_s` segment of `frames`: CSIM to the reference and Sync-C / Sync-D with its
    speech (`measure` is evaluate's `Measure`), and each one's slope per minute."""
    per = round(segment_s * fps)
    starts = list(range(0, len(frames) - per + 1, per))
    segments = [frames[s:s + per] for s in starts]
    speech = [mfcc(case.speech[round(s / fps * SAMPLE_RATE):round((s + per) / fps * SAMPLE_RATE)],
                   SAMPLE_RATE) for s in starts]
    sync = measure.sync(segments, speech)
    csim = measure.csim(segments, np.repeat(case.inputs.reference[None], len(segments), axis=0))
    times = np.array(starts) / fps + segment_s / 2
    return {"segments": [{"start_s": round(s / fps, 2), "csim": float(c),
                          "sync_c": float(sc), "sync_d": float(sd)}
                         for s, c, sc, sd in zip(starts, csim, sync["sync_c"], sync["sync_d"],
                                                 strict=True)],
            "csim_slope_per_min": _slope_per_minute(times, csim),
            "sync_c_slope_per_min": _slope_per_minute(times, sync["sync_c"])}


def drift_csv(result: dict) -> str:
    """One line a segment: the generated video's CSIM, Sync-C and Sync-D, then the real clips'."""
    lines = ["start_s,csim,sync_c,sync_d,real_csim,real_sync_c,real_sync_d"]
    lines += [f"{s['start_s']:.2f},{s['csim']:.4f},{s['sync_c']:.4f},{s['sync_d']:.4f},"
              f"{r['csim']:.4f},{r['sync_c']:.4f},{r['sync_d']:.4f}"
              for s, r in zip(result["segments"], result["real"]["segments"], strict=True)]
    return "\n".join(lines) + "\n"


def drift_plot(result: dict, path) -> None:
    """CSIM and Sync-C per segment over the video, generated and real."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    times = [s["start_s"] + result["segment_s"] / 2 for s in result["segments"]]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, key, title in ((axes[0], "csim", "CSIM to the reference"),
                           (axes[1], "sync_c", "Sync-C with the speech")):
        ax.plot(times, [s[key] for s in result["segments"]], "o-", label="generated")
        ax.plot(times, [s[key] for s in result["real"]["segments"]], "o--", color="grey",
                label="real clips")
        slope = result[f"{key}_slope_per_min"]
        ax.set_title(f"{title} (slope {slope:+.3f}/min)" if np.isfinite(slope) else title,
                     fontsize=9)
        ax.set_xlabel("seconds into the video")
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['seconds']:.0f} s, identity {result['identity']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
