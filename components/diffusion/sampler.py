"""Euler sampling with classifier-free guidance, for one window of frames.

Per timestep the denoiser sees the batch twice, once with every condition dropped (no
reference, Head-Kps, audio or style: what `uncond_probability` trained) and once with them, and
the prediction is `uncond + guidance * (cond - uncond)`; the scheduler then steps once over the
whole latent tensor (diffusers' Euler is stateful: one `step` per timestep). The ReferenceNet's
features are computed by the caller, once per video.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import EulerDiscreteScheduler
from torch import Tensor

from components.diffusion.denoiser import Denoiser


def _twice(x: Tensor | None) -> Tensor | None:
    return None if x is None else torch.cat([x, x])


@dataclass
class Conditions:
    """What one denoising call is conditioned on (see `Denoiser.forward`), already doubled for
    classifier-free guidance by `guided`: the first half has every condition dropped."""

    reference: dict[str, Tensor]
    kps: Tensor
    audio: Tensor | None
    style: Tensor | None
    keep: Tensor
    guidance: float
    style_scale: float = 1.0

    @classmethod
    def guided(cls, reference: dict[str, Tensor], kps: Tensor, audio: Tensor | None,
               style: Tensor | None, guidance: float, style_scale: float = 1.0) -> Conditions:
        b, device = len(kps), kps.device
        if guidance == 1.0:
            return cls(reference, kps, audio, style, torch.ones(b, dtype=torch.bool,
                                                               device=device), guidance,
                       style_scale)
        keep = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
        return cls({name: _twice(f) for name, f in reference.items()}, _twice(kps),
                   _twice(audio), _twice(style), keep.to(device), guidance, style_scale)


@torch.no_grad()
def guided_prediction(denoiser: Denoiser, scheduler: EulerDiscreteScheduler, latents: Tensor,
                      t: Tensor, c: Conditions) -> Tensor:
    """The guided model prediction for `latents` at timestep `t`."""
    model_input = scheduler.scale_model_input(latents, t)
    guided = c.guidance != 1.0
    model_input = _twice(model_input) if guided else model_input
    prediction = denoiser(model_input, t.expand(len(c.keep)), c.reference, c.kps, c.audio,
                          c.style, c.keep, c.style_scale)
    if not guided:
        return prediction
    uncond, cond = prediction.chunk(2)
    return uncond + c.guidance * (cond - uncond)


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler: EulerDiscreteScheduler, *, reference: dict[str, Tensor],
           kps: Tensor, audio: Tensor | None, style: Tensor | None, shape: tuple[int, ...],
           steps: int, guidance: float, generator: torch.Generator,
           style_scale: float = 1.0) -> Tensor:
    """Latents (B, C, F, h, w) for the conditions of `Denoiser.forward`; noise from `generator`
    (a CPU generator: the same seed gives the same video on any device)."""
    device = next(denoiser.parameters()).device
    conditions = Conditions.guided(reference, kps.to(device),
                                   None if audio is None else audio.to(device),
                                   None if style is None else style.to(device), guidance,
                                   style_scale)
    scheduler.set_timesteps(steps, device=device)
    latents = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        prediction = guided_prediction(denoiser, scheduler, latents, t, conditions)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return latents
