"""The latent space: diffusers' `AutoencoderKL`.

Full profile: SD1.5's VAE from a local diffusers folder (`<pretrained>/vae/`). Embedded profile:
no pretrained VAE exists here, so `train_vae` trains a small one of the same architecture on the
training split's face crops and on stills of procedural identities seen nowhere else
(`components/synth/stills.py`); it stands in for SD's VAE (4 latent channels, but a 4x rather than
8x downsampling at 64 px). Latents are the posterior mean times `scaling_factor` (SD: 0.18215;
a trained VAE gets 1 / the standard deviation of its training latents), as V-Express encodes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from components.config import DiffusionConfig
from components.errors import SvpError


def new_vae(cfg: DiffusionConfig) -> AutoencoderKL:
    n = len(cfg.vae.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(cfg.vae.block_out_channels),
        layers_per_block=cfg.vae.layers_per_block, latent_channels=cfg.vae.latent_channels,
        norm_num_groups=cfg.vae.norm_num_groups, sample_size=cfg.resolution, scaling_factor=1.0,
        mid_block_add_attention=cfg.vae.mid_block_attention)


def load_pretrained_vae(folder: str | Path) -> AutoencoderKL:
    """`AutoencoderKL.from_pretrained(<folder>/vae)` (or `<folder>` itself if it is the VAE)."""
    folder = Path(folder)
    root = folder / "vae" if (folder / "vae" / "config.json").is_file() else folder
    if not (root / "config.json").is_file():
        raise SvpError(f"{folder}: no diffusers VAE here (expected vae/config.json)")
    try:
        return AutoencoderKL.from_pretrained(str(root), use_safetensors=True,
                                             low_cpu_mem_usage=False).eval()
    except (OSError, ValueError, RuntimeError) as err:
        raise SvpError(f"{root}: cannot load the VAE ({' '.join(str(err).split())[:160]})"
                       ) from None


def to_model_images(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) -> float (N, 3, H, W) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(images)).to(device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (N, 3, H, W) in [-1, 1] -> uint8 (N, H, W, 3)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round()
    return x.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


@torch.no_grad()
def encode(vae: AutoencoderKL, images: np.ndarray, batch_size: int = 64) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> scaled latents (N, C, h, w) float32 (posterior means)."""
    device = next(vae.parameters()).device
    out = [vae.encode(to_model_images(images[i:i + batch_size], device)).latent_dist.mean
           for i in range(0, len(images), batch_size)]
    return torch.cat(out).float().cpu() * vae.config.scaling_factor


@torch.no_grad()
def decode(vae: AutoencoderKL, latents: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Scaled latents (N, C, h, w) -> uint8 (N, H, W, 3)."""
    device = next(vae.parameters()).device
    out = [to_uint8(vae.decode(latents[i:i + batch_size].to(device)
                               / vae.config.scaling_factor).sample)
           for i in range(0, len(latents), batch_size)]
    return np.concatenate(out)
