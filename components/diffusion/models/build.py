"""From `diffusion` params to a `Denoiser`: the part configs, and the pretrained weights the full
profile starts from (SD1.5's UNet for the denoiser's spatial layers and the ReferenceNet, as
AnimateAnyone and V-Express initialise both; AnimateDiff's motion modules in stage 2).

The architecture always comes from params; a pretrained folder must match it, and any mismatch
is a one-line error naming the file and the key.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel

from components.config import DiffusionConfig
from components.diffusion.models.attention import spatial_attentions
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.models.motion import load_motion_adapter
from components.errors import SvpError


def vae_factor(cfg: DiffusionConfig) -> int:
    return 2 ** (len(cfg.vae.block_out_channels) - 1)


def unet_config(cfg: DiffusionConfig) -> dict:
    """`UNet2DConditionModel` keyword arguments."""
    unet = asdict(cfg.unet)
    unet.pop("pretrained")
    return unet | {"sample_size": cfg.resolution // vae_factor(cfg),
                   "in_channels": cfg.vae.latent_channels,
                   "out_channels": cfg.vae.latent_channels}


def motion_config(cfg: DiffusionConfig) -> dict:
    """`MotionAdapter` keyword arguments (one motion layer per UNet layer, as AnimateDiff)."""
    return {"block_out_channels": list(cfg.unet.block_out_channels),
            "motion_layers_per_block": cfg.unet.layers_per_block,
            "motion_num_attention_heads": cfg.motion.num_attention_heads,
            "motion_norm_num_groups": cfg.motion.norm_num_groups,
            "motion_max_seq_length": cfg.motion.max_seq_length,
            "use_motion_mid_block": cfg.motion.use_mid_block}


def new_denoiser(cfg: DiffusionConfig, fps: float = 25.0) -> Denoiser:
    """A stage-1 denoiser (the image model): random, or with SD's UNet weights when
    `diffusion.unet.pretrained`. Its audio window is `audio.window_s` at the features' `fps`
    (two Whisper steps per frame)."""
    audio = {"window_steps": 2 * max(1, round(cfg.audio.window_s * fps)),
             "vector_dim": cfg.audio.vector_dim, "hidden_dim": cfg.audio.hidden_dim,
             "n_tokens": cfg.audio.n_tokens}
    denoiser = Denoiser(unet_config=unet_config(cfg), motion_config=None,
                        kps_guider_channels=list(cfg.kps_guider_channels), audio_config=audio,
                        style_config=asdict(cfg.style), reference_input=cfg.reference_input,
                        reference_input_hole=cfg.reference_input_hole)
    if cfg.unet.pretrained:
        load_sd_unet(denoiser, cfg)
    for attn in spatial_attentions(denoiser.unet, "attn2").values():  # audio starts silent
        torch.nn.init.zeros_(attn.to_out[0].weight)  # (V-Express zeroes SD's text to_out too)
        torch.nn.init.zeros_(attn.to_out[0].bias)
    return denoiser


def load_sd_unet(denoiser: Denoiser, cfg: DiffusionConfig) -> None:
    """SD's UNet weights into the ReferenceNet and the denoiser's spatial layers."""
    folder = Path(cfg.unet.pretrained)
    root = folder / "unet" if (folder / "unet" / "config.json").is_file() else folder
    if not (root / "config.json").is_file():
        raise SvpError(f"{folder}: no diffusers UNet here (expected unet/config.json)")
    try:
        sd = UNet2DConditionModel.from_pretrained(str(root), use_safetensors=True,
                                                  low_cpu_mem_usage=False)
    except (OSError, ValueError, RuntimeError) as err:
        raise SvpError(f"{root}: cannot load the UNet ({' '.join(str(err).split())[:160]})"
                       ) from None
    wanted = unet_config(cfg)
    for key, value in wanted.items():
        theirs = sd.config.get(key)
        theirs = list(theirs) if isinstance(theirs, tuple) else theirs
        if key != "sample_size" and theirs != value:
            raise SvpError(f"{root / 'config.json'}: {key} is {theirs}, diffusion.unet says "
                           f"{value}")
    weights = sd.state_dict()
    denoiser.reference_net.load_state_dict(weights)
    missing, unexpected = denoiser.unet.load_state_dict(weights, strict=False)
    stray = [k for k in missing if ".processor." not in k]
    if unexpected or stray:
        raise SvpError(f"{root}: weights do not fit the denoiser "
                       f"({(unexpected or stray)[0]})")


def add_motion_modules(denoiser: Denoiser, cfg: DiffusionConfig) -> None:
    """Stage 2's start: new motion modules, or AnimateDiff's when `diffusion.motion.pretrained`."""
    adapter = None
    if cfg.motion.pretrained:
        adapter = load_motion_adapter(cfg.motion.pretrained, motion_config(cfg))
    denoiser.add_motion(motion_config(cfg), adapter)
