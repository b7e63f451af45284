"""Every row's frames for one case, made by the generation pipeline `svp generate` uses."""

from __future__ import annotations

from dataclasses import replace
from typing import NamedTuple

import numpy as np

from components.diffusion.frames import Clip, Sample
from components.diffusion.models.vae import decode, encode
from components.generation.pipeline import GenerationInputs, Sampling, TalkingHeadPipeline
from components.generation.style import Style


def window(clip: Clip, case: Sample, frames: int) -> np.ndarray:
    return np.clip(np.arange(case.start, case.start + frames), 0, len(clip) - 1)


def real_frames(clips: list[Clip], case: Sample, frames: int) -> np.ndarray:
    """(F, R, R, 3) uint8: the target's window."""
    return clips[case.target].frames(window(clips[case.target], case, frames))


def full_inputs(clips: list[Clip], case: Sample, frames: int, style: Style,
                seed: int) -> GenerationInputs:
    """The full model's inputs for a case: reference, the target's Head-Kps, speech and style."""
    target, idx = clips[case.target], window(clips[case.target], case, frames)
    return GenerationInputs(clips[case.reference].frames(0)[0], target.kps[idx],
                            target.audio[idx], style.draw(seed))


class Variant(NamedTuple):
    """One way to sample (the samplers' benchmark): the sampler, and the precision."""

    sampling: Sampling
    bf16: bool = False  # the denoiser under bf16 autocast


def sampler_rows(pipeline: TalkingHeadPipeline, inputs: GenerationInputs,
                 variants: dict[str, Variant], seed: int) -> dict[str, np.ndarray]:
    """Variant name -> the full model's frames sampled that way."""
    rows, bf16 = {}, pipeline.bf16
    for name, variant in variants.items():
        pipeline.bf16 = variant.bf16
        rows[name] = np.stack(list(pipeline(inputs, seed=seed, sampling=variant.sampling)))
    pipeline.bf16 = bf16
    return rows


def ablation_baseline(pipeline: TalkingHeadPipeline, quality: str) -> str:
    """The row the ablation rows sampled with `quality` are compared with: the full model
    sampled the same way ("fast", or "full" for the paper sampler or a generator without a fast
    one)."""
    return "fast" if quality == "fast" and "fast" in pipeline.qualities else "full"


def case_rows(pipeline: TalkingHeadPipeline, clips: list[Clip], case: Sample, frames: int,
              style: Style, seed: int, ablation_quality: str = "paper") -> dict[str, np.ndarray]:
    """Row name -> (F, R, R, 3) uint8 frames. Every generated row starts from the same noise; a
    generator without a fast sampler has no "fast" row. The ablation rows (no_style, mean_style,
    other_speech) are sampled as `ablation_baseline` says. "vae_ceiling" is the real window
    through the generator's VAE: what its latent space allows at best."""
    full = full_inputs(clips, case, frames, style, seed)
    speech = clips[case.other_speech]
    idx = window(clips[case.target], case, frames)

    def generate(inputs: GenerationInputs, style_scale: float = 1.0,
                 quality: str = "paper") -> np.ndarray:
        return np.stack(list(pipeline(inputs, seed=seed, style_scale=style_scale,
                                      sampling=pipeline.sampling(quality))))

    made = {"full": generate(full)}
    if "fast" in pipeline.qualities:
        made["fast"] = generate(full, quality="fast")
    ablation = "fast" if ablation_baseline(pipeline, ablation_quality) == "fast" else "paper"
    return {**made,
            "no_style": generate(full, 0.0, ablation),
            "mean_style": generate(replace(full, style=style.draw(seed, use_mean=True)),
                                   quality=ablation),
            "other_speech": generate(replace(
                full, audio=speech.audio[np.clip(idx, 0, len(speech) - 1)]), quality=ablation),
            "reference_repeated": np.repeat(full.reference[None], frames, axis=0),
            "vae_ceiling": decode(pipeline.vae, encode(pipeline.vae,
                                                       real_frames(clips, case, frames)))}
