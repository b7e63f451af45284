"""Every row's frames for one case, made by the generation pipeline `svp generate` uses."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from components.diffusion.frames import Clip, Sample
from components.diffusion.models.vae import decode, encode
from components.generation.pipeline import GenerationInputs, Sampling, TalkingHeadPipeline
from components.generation.style import Style
from components.precision import autocast


def window(clip: Clip, case: Sample, frames: int) -> np.ndarray:
    return np.clip(np.arange(case.start, case.start + frames), 0, len(clip) - 1)


def real_frames(clips: list[Clip], case: Sample, frames: int) -> np.ndarray:
    """(F, R, R, 3) uint8: the target's window."""
    return clips[case.target].frames(window(clips[case.target], case, frames))


def full_inputs(clips: list[Clip], case: Sample, frames: int, style: Style, seed: int,
                index: int = 0) -> GenerationInputs:
    """The full model's inputs for a case: reference, the target's Head-Kps, speech and style
    (the `index`th draw of the seed's style stream)."""
    target, idx = clips[case.target], window(clips[case.target], case, frames)
    return GenerationInputs(clips[case.reference].frames(0)[0], target.kps[idx],
                            target.audio[idx], style.draw(seed, index=index))


class Variant(NamedTuple):
    """One way to sample (the samplers' benchmark): the sampler, and the precision."""

    sampling: Sampling
    bf16: bool = False  # the denoiser under bf16 autocast


def batched(pipeline: TalkingHeadPipeline, videos: list[GenerationInputs], sampling: Sampling,
            seed: int, batch: int, style_scale: float = 1.0) -> list[np.ndarray]:
    """Each video's frames, `batch` videos a denoising loop, the k-th video from the k-th noise
    of the seed's latent stream whatever the batch: each case its own draw, so the spread
    between cases includes the sampling noise's. 4 cases a loop took 0.88 of the time of one
    by one on 2 cores (benchmarks/evaluate_batch.md)."""
    out: list[np.ndarray] = []
    for first in range(0, len(videos), batch):
        chunk = videos[first:first + batch]
        out += list(pipeline.generate_batch(chunk, seed=seed, sampling=sampling,
                                            style_scale=style_scale,
                                            noise=list(range(first, first + len(chunk)))))
    return out


def sampler_rows(pipeline: TalkingHeadPipeline, inputs: list[GenerationInputs],
                 variants: dict[str, Variant], seed: int, batch: int) -> dict[str, list]:
    """Variant name -> each case's frames, the full model sampled that way."""
    rows, bf16 = {}, pipeline.bf16
    for name, variant in variants.items():
        pipeline.bf16 = variant.bf16
        rows[name] = batched(pipeline, inputs, variant.sampling, seed, batch)
    pipeline.bf16 = bf16
    return rows


def ablation_baseline(pipeline: TalkingHeadPipeline, quality: str) -> str:
    """The row the ablation rows sampled with `quality` are compared with: the full model
    sampled the same way ("fast", or "full" for the paper sampler or a generator without a fast
    one)."""
    return "fast" if quality == "fast" and "fast" in pipeline.qualities else "full"


def protocol_rows(pipeline: TalkingHeadPipeline, clips: list[Clip], cases: list[Sample],
                  frames: int, styles: list[Style], seed: int, ablation_quality: str = "paper",
                  batch: int = 1) -> dict[str, list[np.ndarray]]:
    """Row name -> each case's (F, R, R, 3) uint8 frames. Every generated row of the k-th case
    starts from the k-th noise and the k-th style draw of the seed (the rows of a case share
    them, so a row's difference from full is the row's own); a generator without a fast
    sampler has no "fast" row. The ablation rows (no_style, mean_style, other_speech) are
    sampled as `ablation_baseline` says.
    "vae_ceiling" is the real window through the generator's VAE: what its latent space allows
    at best. `batch`: cases a denoising loop."""
    full = [full_inputs(clips, case, frames, style, seed, k)
            for k, (case, style) in enumerate(zip(cases, styles, strict=True))]
    other_speech = []
    for case, inputs in zip(cases, full, strict=True):
        speech = clips[case.other_speech]
        idx = window(clips[case.target], case, frames)
        other_speech.append(replace(inputs, audio=speech.audio[np.clip(idx, 0, len(speech) - 1)]))
    mean_style = [replace(inputs, style=style.draw(seed, use_mean=True))
                  for inputs, style in zip(full, styles, strict=True)]

    def generate(videos: list[GenerationInputs], quality: str = "paper",
                 style_scale: float = 1.0) -> list[np.ndarray]:
        return batched(pipeline, videos, pipeline.sampling(quality), seed, batch, style_scale)

    made = {"full": generate(full)}
    if "fast" in pipeline.qualities:
        made["fast"] = generate(full, "fast")
    ablation = "fast" if ablation_baseline(pipeline, ablation_quality) == "fast" else "paper"
    return {**made,
            "no_style": generate(full, ablation, style_scale=0.0),
            "mean_style": generate(mean_style, ablation),
            "other_speech": generate(other_speech, ablation),
            "reference_repeated": [np.repeat(v.reference[None], frames, axis=0) for v in full],
            "vae_ceiling": [vae_ceiling(pipeline, real_frames(clips, case, frames))
                            for case in cases]}


def vae_ceiling(pipeline: TalkingHeadPipeline, frames: np.ndarray) -> np.ndarray:
    """Real frames through the generator's VAE in the pipeline's precision: what a perfect
    denoiser would give."""
    with autocast(pipeline.bf16, pipeline.device):
        return decode(pipeline.vae, encode(pipeline.vae, frames))
