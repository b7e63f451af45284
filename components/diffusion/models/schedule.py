"""The noise schedule: one config (`diffusion.noise`) for training and sampling alike.

Training noises latents and computes the target with diffusers' `DDPMScheduler`; sampling runs
`EulerDiscreteScheduler` built from the same betas, prediction type (v-prediction), zero-SNR
rescaling and trailing timestep spacing (V-Express's setup), so the model is sampled with exactly
the schedule it was trained on (the peers' mixed `linear`/`scaled_linear` configs are a known
pitfall).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from diffusers import DDPMScheduler, EulerDiscreteScheduler
from diffusers.training_utils import compute_snr

from components.config import NoiseConfig


def training_scheduler(cfg: NoiseConfig) -> DDPMScheduler:
    return DDPMScheduler(**asdict(cfg), clip_sample=False)


def sampling_scheduler(cfg: NoiseConfig) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(**asdict(cfg))


def training_target(scheduler: DDPMScheduler, latents: torch.Tensor, noise: torch.Tensor,
                    timesteps: torch.Tensor) -> torch.Tensor:
    if scheduler.config.prediction_type == "v_prediction":
        return scheduler.get_velocity(latents, noise, timesteps)
    return noise


def snr_weights(scheduler: DDPMScheduler, timesteps: torch.Tensor, gamma: float | None):
    """Min-SNR-γ loss weights per sample (Hang et al. 2023), or ones. For v-prediction the SNR
    of the velocity objective is SNR + 1 (diffusers' training scripts), which keeps the zero-SNR
    step's weight at 1 instead of 0."""
    if gamma is None:
        return torch.ones(len(timesteps), device=timesteps.device)
    snr = compute_snr(scheduler, timesteps)
    if scheduler.config.prediction_type == "v_prediction":
        snr = snr + 1
    return torch.minimum(snr, torch.full_like(snr, gamma)) / snr.clamp_min(1e-8)
