"""The noise schedule: one config (`diffusion.noise`) for training and sampling alike.

Training noises latents and computes the target with diffusers' `DDPMScheduler`; sampling runs
`EulerDiscreteScheduler` built from the same betas, prediction type (v-prediction), zero-SNR
rescaling and trailing timestep spacing (V-Express's setup), so the model is sampled with exactly
the schedule it was trained on (the peers' mixed `linear`/`scaled_linear` configs are a known
pitfall). The fast sampler's multistep solvers (`solver_scheduler`) are built from that same
config: DPM-Solver++ (2M, the solver of EchoMimic's and LatentSync's fast paths) and UniPC.
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from diffusers import (
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.training_utils import compute_snr

from components.config import NoiseConfig


def training_scheduler(cfg: NoiseConfig) -> DDPMScheduler:
    return DDPMScheduler(**asdict(cfg), clip_sample=False)


def sampling_scheduler(cfg: NoiseConfig) -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(**asdict(cfg))


SOLVERS = ("euler", "dpmsolver++", "unipc")


def solver_scheduler(config: dict, solver: str) -> SchedulerMixin:
    """A fresh scheduler of `solver` on the noise schedule `config` (a saved scheduler's): each
    call samples with its own, so concurrent calls never share a stateful solver."""
    if solver == "euler":
        return EulerDiscreteScheduler.from_config(config)
    if solver == "dpmsolver++":  # second order, ending on sigma 0 as Euler does
        return DPMSolverMultistepScheduler.from_config(
            config, algorithm_type="dpmsolver++", solver_order=2, final_sigmas_type="zero")
    if solver == "unipc":
        return UniPCMultistepScheduler.from_config(config, solver_order=2,
                                                   final_sigmas_type="zero")
    raise ValueError(f"unknown solver {solver!r}; one of {', '.join(SOLVERS)}")


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
