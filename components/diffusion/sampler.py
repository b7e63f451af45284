"""Euler sampling with classifier-free guidance, for one window of frames.

Per timestep the denoiser sees the batch twice, once with every condition dropped (no
reference, Head-Kps, audio or style: what `uncond_probability` trained) and once with them, and
the prediction is `uncond + guidance * (cond - uncond)`; the scheduler then steps once over the
whole latent tensor (diffusers' Euler is stateful: one `step` per timestep). The ReferenceNet's
features are computed by the caller, once per video.
"""

from __future__ import annotations

import torch
from diffusers import EulerDiscreteScheduler
from torch import Tensor

from components.diffusion.denoiser import Denoiser


def _twice(x: Tensor | None) -> Tensor | None:
    return None if x is None else torch.cat([x, x])


@torch.no_grad()
def sample(denoiser: Denoiser, scheduler: EulerDiscreteScheduler, *, reference: dict[str, Tensor],
           kps: Tensor, audio: Tensor | None, style: Tensor | None, shape: tuple[int, ...],
           steps: int, guidance: float, generator: torch.Generator,
           style_scale: float = 1.0) -> Tensor:
    """Latents (B, C, F, h, w) for the conditions of `Denoiser.forward`; noise from `generator`
    (a CPU generator: the same seed gives the same video on any device)."""
    device = next(denoiser.parameters()).device
    b = shape[0]
    guided = guidance != 1.0
    keep = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)]) \
        if guided else torch.ones(b, dtype=torch.bool)
    keep = keep.to(device)
    if guided:
        reference = {name: _twice(features) for name, features in reference.items()}
        kps, audio, style = _twice(kps), _twice(audio), _twice(style)

    scheduler.set_timesteps(steps, device=device)
    latents = torch.randn(shape, generator=generator).to(device) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(latents, t)
        model_input = _twice(model_input) if guided else model_input
        prediction = denoiser(model_input, t.expand(len(keep)), reference, kps, audio, style,
                              keep, style_scale)
        if guided:
            uncond, cond = prediction.chunk(2)
            prediction = uncond + guidance * (cond - uncond)
        latents = scheduler.step(prediction, t, latents).prev_sample
    return latents
