"""Does a stage do what it is for? Measured on a fixed batch of the held-out identities, with the
generation pipeline (`TalkingHeadPipeline`, the loop `svp generate` runs, sampling as
`diffusion.sampling` says), landmarks found on the pixels by the project's detector.

- Stage 1, the head follows the Head-Kps: each test clip's first frame is the reference and the
  target is the frame whose keypoints lie farthest from it; the keypoints found on the generated
  frame must be closer to the conditioning keypoints than those found on the reference frame.
- Stage 2, the mouth follows the audio: each test clip's 8-frame window where its mouth moves
  most, referenced on the clip's first frame; M-LMD against the real frames with the clip's own
  speech must be clearly below M-LMD with another clip's speech (another sentence of the same
  speaker, `other_speech`): the paired gap more than two standard errors below zero over the
  windows (a fixed 5% margin passed or failed on one lucky or unlucky window of six:
  measured). It must also be below the reference frame repeated; that gap's spread over the
  windows is how far each window's head moves from the reference frame, not noise. Beside it, the
  correlation of the generated mouth opening with the real one, driven by either speech: the
  lip sync itself, which M-LMD mixes with the mouth's placement and shape.
- Stage 3, the style moves the expression: emotional test clips' windows, one emotion after
  another, referenced on the first frame of the same identity's neutral clip, styled by a draw
  from the prior of another clip of the target's emotion; F-LMD with the style must be below
  F-LMD with the style attention off.

Every stage also reports PSNR, SSIM, F-LMD and M-LMD of its main row, and a picture of the
generated frames next to the real ones. Stages 2 and 3 also report the compared gap with its
standard error over the batch's windows (`*_minus_*`, `*_se`): the batch is small, and a gap
within two standard errors is noise whichever way the check went.
"""

from __future__ import annotations

from itertools import zip_longest

import numpy as np

from components.diffusion.frames import Clip, Sample
from components.evaluation.metrics import (
    FaceLandmarks,
    correlation,
    frame_metrics,
    kps_error,
    m_lmd,
    mean_metrics,
    mouth_opening,
    nanmean,
    paired_difference,
)
from components.evaluation.metrics import f_lmd as full_lmd
from components.generation.pipeline import GenerationInputs, TalkingHeadPipeline
from components.generation.style import Style

CLEAR = 2.0  # "clearly below": the gap exceeds this many standard errors over the windows


def _farthest_frame(clip: Clip) -> int:
    return int(np.argmax(np.linalg.norm(clip.kps - clip.kps[0], axis=-1).mean(-1)))


def liveliest_window(clip: Clip, frames: int) -> int:
    """The start of the window where the mouth moves most (lip sync shows only there)."""
    opening = mouth_opening(clip.landmarks)
    starts = range(max(1, len(clip) - frames + 1))
    return max(starts, key=lambda s: (np.ptp(opening[s:s + frames]), -s))


def _mouth_opening(clip: Clip, start: int, frames: int) -> np.ndarray:
    return mouth_opening(clip.landmarks[np.clip(np.arange(start, start + frames), 0,
                                                len(clip) - 1)])


def other_speech(clips: list[Clip], order: list[int], target: int, start: int,
                  frames: int) -> int | None:
    """The same identity's clip whose speech moves the mouth least like the target's over the
    window (lowest correlation of the real mouth openings): another sentence, not the same words
    in another emotion (MEAD and the synth reuse each speaker's sentences across emotions; on
    the embedded test clips the first other clip's openings correlated 0.82 with the target's)."""
    same = [j for j in order if j != target and clips[j].identity == clips[target].identity]
    candidates = same or [j for j in order if j != target]
    if not candidates:
        return None
    own = _mouth_opening(clips[target], start, frames)

    def likeness(j: int) -> float:  # a still mouth: neither like nor unlike
        return float(np.nan_to_num(correlation(own, _mouth_opening(clips[j], start, frames))))

    return min(candidates, key=lambda j: (likeness(j), j))


def alternate_identities(order: list[int], clips: list[Clip]) -> list[int]:
    """Clips one identity after another (W003's first, W004's first, W003's second, ...)."""
    by_identity: dict[str, list[int]] = {}
    for i in order:
        by_identity.setdefault(clips[i].identity, []).append(i)
    return [i for row in zip_longest(*by_identity.values()) for i in row if i is not None]


def fixed_items(stage: int, clips: list[Clip], n: int, frames: int) -> list[Sample]:
    """The same held-out batch every time: at most `n` items."""
    order = sorted(range(len(clips)), key=lambda i: clips[i].sample_id)
    if stage == 1:
        return [Sample(i, _farthest_frame(clips[i]), i, 0)
                for i in alternate_identities(order, clips)[:n]]
    if stage == 2:
        items = []
        for i in alternate_identities(order, clips)[:n]:
            start = liveliest_window(clips[i], frames)
            items.append(Sample(i, start, i, 0,
                                other_speech=other_speech(clips, order, i, start, frames)))
        return items
    # stage 3: one emotion after another, each referenced on a neutral frame (or, without a
    # neutral clip of that identity, another emotion's)
    by_emotion: dict[str, list[int]] = {}
    for i in order:
        if clips[i].emotion not in (None, "neutral"):
            by_emotion.setdefault(clips[i].emotion, []).append(i)
    queue = [i for row in zip_longest(*by_emotion.values()) for i in row if i is not None]
    items = []
    for i in queue[:n]:
        clip = clips[i]
        same = [j for j in order if clips[j].identity == clip.identity and j != i]
        reference = [j for j in same if clips[j].emotion == "neutral"] or \
            [j for j in same if clips[j].group != clip.group] or [i]
        group = [j for j in same if clips[j].group == clip.group] or [i]
        items.append(Sample(i, max(0, (len(clip) - frames) // 2), reference[0], 0,
                            style=group[0]))
    return items


class Evaluation:
    """Generates and measures the fixed batch for one stage, with the generation pipeline."""

    def __init__(self, pipeline: TalkingHeadPipeline, clips: list[Clip], detector: FaceLandmarks,
                 styles: np.ndarray | None = None, seed: int = 0, quality: str = "paper"):
        self.pipeline, self.clips, self.detector = pipeline, clips, detector
        self.styles, self.seed = styles, seed
        self.sampling = pipeline.sampling(quality)  # the generator's sampler the batch is made with

    def _window(self, item: Sample, frames: int, clip: int | None = None) -> np.ndarray:
        clip = item.target if clip is None else clip
        return np.clip(np.arange(item.start, item.start + frames), 0, len(self.clips[clip]) - 1)

    def _inputs(self, item: Sample, frames: int, audio_from: str | None) -> GenerationInputs:
        target = self.clips[item.target]
        audio = None
        if audio_from is not None:
            source = item.target if audio_from == "own" else item.other_speech
            audio = self.clips[source].audio[self._window(item, frames, source)]
        style = None
        if self.styles is not None and item.style is not None:
            prior = self.styles[item.style]
            style = Style.from_prior(prior[0], prior[1], self.clips[item.style].sample_id
                                     ).draw(self.seed)
        return GenerationInputs(self.clips[item.reference].frames(item.reference_frame)[0],
                                target.kps[self._window(item, frames)], audio, style)

    def generate(self, items: list[Sample], frames: int, audio_from: str | None = None,
                 style_scale: float = 1.0) -> np.ndarray:
        """(B, F, H, W, 3) uint8. `audio_from`: None (no audio), "own" or "other"."""
        videos = [self._inputs(i, frames, audio_from) for i in items]
        return self.pipeline.generate_batch(videos, seed=self.seed, sampling=self.sampling,
                                            style_scale=style_scale, window_batch=1)

    def real(self, items: list[Sample], frames: int) -> np.ndarray:
        return np.stack([self.clips[i.target].frames(self._window(i, frames)) for i in items])

    def reference_frames(self, items: list[Sample], frames: int) -> np.ndarray:
        return np.stack([np.repeat(self.clips[i.reference].frames(i.reference_frame), frames, 0)
                         for i in items])

    def landmarks(self, videos: np.ndarray) -> np.ndarray:
        return self.detector(videos.reshape(-1, *videos.shape[2:]))


def frame_scores(generated: np.ndarray, real: np.ndarray, lm_generated: np.ndarray,
                 lm_real: np.ndarray) -> dict[str, float]:
    flat = [v.reshape(-1, *v.shape[2:]) for v in (generated, real)]
    scores = mean_metrics(frame_metrics(*flat, lm_generated, lm_real))
    return {k: scores[k] for k in ("psnr", "ssim", "f_lmd", "m_lmd")}


def evaluate_stage(stage: int, ev: Evaluation, n: int, frames: int) -> tuple[dict, list, list]:
    """(metrics, picture rows, row labels) for `stage`."""
    items = fixed_items(stage, ev.clips, n, frames if stage > 1 else 1)
    if stage == 1:
        return _stage1(ev, items)
    if stage == 2:
        return _stage2(ev, items, frames)
    return _stage3(ev, items, frames)


def _stage1(ev: Evaluation, items: list[Sample]):
    generated, real = ev.generate(items, 1), ev.real(items, 1)
    reference = ev.reference_frames(items, 1)
    conditioning = np.stack([ev.clips[i.target].kps[i.start] for i in items])
    lm_gen, lm_real, lm_ref = (ev.landmarks(v) for v in (generated, real, reference))
    metrics = frame_scores(generated, real, lm_gen, lm_real) | {
        "kps_error_generated": nanmean(kps_error(lm_gen, conditioning)),
        "kps_error_reference": nanmean(kps_error(lm_ref, conditioning)),
        "kps_error_real_target": nanmean(kps_error(lm_real, conditioning)),
        "faces_found": float(np.isfinite(lm_gen).all(axis=(1, 2)).mean())}
    metrics["learned"] = {"follows_head_kps": follows_head_kps(metrics)}
    rows = [reference[:, 0], real[:, 0], generated[:, 0]]
    return metrics, rows, ["reference", "target (real)", "generated"]


def _stage2(ev: Evaluation, items: list[Sample], frames: int):
    own, other = ev.generate(items, frames, "own"), ev.generate(items, frames, "other")
    real, repeated = ev.real(items, frames), ev.reference_frames(items, frames)
    lm_real = ev.landmarks(real)
    lm = {name: ev.landmarks(v) for name, v in (("own", own), ("other", other),
                                                ("repeated", repeated))}
    metrics = frame_scores(own, real, lm["own"], lm_real) | {
        f"m_lmd_{name}": nanmean(m_lmd(found, lm_real)) for name, found in lm.items()}
    own_error = m_lmd(lm["own"], lm_real)
    for name in ("other", "repeated"):
        gap, se = paired_difference(own_error, m_lmd(lm[name], lm_real), frames)
        metrics |= {f"m_lmd_own_minus_{name}": gap, f"m_lmd_own_minus_{name}_se": se}
    opening = mouth_opening(lm_real)
    metrics |= {f"mouth_opening_corr_{name}": correlation(mouth_opening(lm[name]), opening)
                for name in ("own", "other")}
    metrics["learned"] = {"mouth_follows_audio": mouth_follows_audio(metrics)}
    first = 0
    rows = [real[first], own[first], other[first]]
    return metrics, rows, ["real", "own speech", "other speech"]


def follows_head_kps(metrics: dict) -> bool:
    """Stage 1's check: the generated head lies closer to the conditioning Head-Kps than the
    reference frame's head does."""
    return bool(metrics["kps_error_generated"] < metrics["kps_error_reference"])


def style_moves_expression(metrics: dict) -> bool:
    """Stage 3's check: F-LMD with the style below F-LMD with the style attention off."""
    return bool(metrics["f_lmd_style"] < metrics["f_lmd_no_style"])


def mouth_follows_audio(metrics: dict) -> bool:
    """Stage 2's check on its metrics (see the module's docstring)."""
    return bool(metrics["m_lmd_own_minus_other"] + CLEAR * metrics["m_lmd_own_minus_other_se"] < 0
                and metrics["m_lmd_own"] < metrics["m_lmd_repeated"])


def _stage3(ev: Evaluation, items: list[Sample], frames: int):
    styled = ev.generate(items, frames, "own")
    unstyled = ev.generate(items, frames, "own", style_scale=0.0)
    real = ev.real(items, frames)
    lm_real = ev.landmarks(real)
    lm_styled, lm_unstyled = ev.landmarks(styled), ev.landmarks(unstyled)
    metrics = frame_scores(styled, real, lm_styled, lm_real) | {
        "f_lmd_style": nanmean(full_lmd(lm_styled, lm_real)),
        "f_lmd_no_style": nanmean(full_lmd(lm_unstyled, lm_real)),
        "emotions": sorted({ev.clips[i.target].emotion for i in items})}
    gap, se = paired_difference(full_lmd(lm_styled, lm_real), full_lmd(lm_unstyled, lm_real),
                                frames)
    metrics |= {"f_lmd_style_minus_off": gap, "f_lmd_style_minus_off_se": se}
    metrics["learned"] = {"style_moves_expression": style_moves_expression(metrics)}
    rows = [ev.reference_frames(items, 1)[:, 0], real[:, frames // 2],
            styled[:, frames // 2], unstyled[:, frames // 2]]
    return metrics, rows, ["neutral reference", "target (real)", "with style", "style off"]
