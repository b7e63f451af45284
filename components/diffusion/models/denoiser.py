"""The denoiser: SD's UNet with AnimateDiff motion modules, a ReferenceNet, the Head-Kps guider,
audio and style projections, wired by attention processors (`attention.py`).

    reference latent ──ReferenceNet (t = 0, zero context)──> bank: attn1 inputs of every layer
                     ──reference_in (a zero-init conv)──> added to conv_in's output, every frame
    Head-Kps images ──guider──> added to conv_in's output, per frame
    audio windows ──AudioProjection──> tokens per frame ──> attn2 (audio cross-attention)
    style draw ──StyleProjection──> tokens ──> the style cross-attention inside attn2
    noisy latents (B, C, F, h, w) ──UNet (attn1 reads the bank; from stage 2 on, motion modules
                                    across the F frames)──> prediction (B, C, F, h, w)

`reference_in` (`diffusion.reference_input`) is SVD's and MimicMotion's channel concatenation of
the reference latents to the noisy ones written as a second conv: conv_in([x; r]) with r's new
input channels zero-initialised equals conv_in(x) + reference_in(r), so SD's conv_in keeps its
pretrained weights untouched. Attention alone copies colours loosely: a held-out background came
out 24 (0-255) off where the VAE's floor is 13.5, 14 with this input (the second embedded
dataset; `benchmarks/reference_path.md`). The reference, aligned pixel for pixel, also carries
its expression, and stage 3's style (trained on other-emotion references) then moved the
expression away from the target; `reference_input_hole` zeroes a box of the reference latents
(the inner face, in the generator's face-centred crop) so that only the background, hair and
clothes enter this way, the face through attention as without the input.

Stage 1 trains an image model (`UNet2DConditionModel`, `motion_config` None: frames are
denoised one by one); `add_motion` turns it into the video model (`UNetMotionModel`).

`encode_reference` runs the ReferenceNet once per video; `forward` is one denoising step.
Conditions a sample drops (`keep` False, classifier-free guidance) are absent, not zero-valued:
no reference tokens, no Head-Kps features, no audio or style attention output.

Saved and loaded as diffusers models are (`save_pretrained` / `from_pretrained`: `config.json`
holding each part's config, one safetensors file for all weights).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.unets.unet_2d_condition import UNet2DConditionModel
from diffusers.models.unets.unet_motion_model import MotionAdapter, UNetMotionModel
from torch import Tensor, nn

from components.diffusion.models.attention import (
    AttentionInputs,
    AudioStyleAttnProcessor,
    ReferenceAttnProcessor,
    ReferenceNetCrossAttnProcessor,
    spatial_attentions,
)
from components.diffusion.models.audio_projection import AudioProjection
from components.diffusion.models.kps_guider import HeadKpsGuider
from components.diffusion.models.motion import new_motion_adapter
from components.diffusion.models.style_projection import StyleProjection
from components.errors import SvpError

REFERENCE_LATENTS = "reference_latents"  # the bank's entry that is no layer's


@contextmanager
def added_to_conv_in(unet: nn.Module, features: Tensor) -> Iterator[None]:
    """For the calls inside the block, `unet.conv_in(x)` returns `conv_in(x) + features`."""
    handle = unet.conv_in.register_forward_hook(lambda module, args, output: output + features)
    try:
        yield
    finally:
        handle.remove()


def outside_box(size: tuple[int, int], box: list[float], device: torch.device,
                dtype: torch.dtype) -> Tensor:
    """(h, w) mask: 0 inside `box` ([x0, y0, x1, y1], fractions of the frame's width and height;
    a cell is inside when its centre is), 1 elsewhere."""
    h, w = size
    ys = (torch.arange(h, device=device) + 0.5) / h
    xs = (torch.arange(w, device=device) + 0.5) / w
    x0, y0, x1, y1 = box
    inside = ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    return (~inside).to(dtype)


class Denoiser(ModelMixin, ConfigMixin):
    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, unet_config: dict, motion_config: dict | None,
                 kps_guider_channels: list[int], audio_config: dict, style_config: dict,
                 reference_input: bool = False,
                 reference_input_hole: list[float] | None = None):
        super().__init__()
        spatial = UNet2DConditionModel(**unet_config)
        self.reference_net = copy.deepcopy(spatial)  # both start as the same UNet, as both
        # start from SD's in AnimateAnyone and V-Express: the denoiser's self-attention then
        # reads reference features of its own kind from the first step
        self.unet = spatial if motion_config is None else \
            UNetMotionModel.from_unet2d(spatial, new_motion_adapter(motion_config))
        channels = unet_config["block_out_channels"][0]
        context = unet_config["cross_attention_dim"]
        self.kps_guider = HeadKpsGuider(channels, tuple(kps_guider_channels))
        self.reference_in = None  # denoisers saved before the param read it as False
        if reference_input:
            self.reference_in = nn.Conv2d(unet_config["in_channels"], channels, 3, padding=1,
                                          bias=False)
            nn.init.zeros_(self.reference_in.weight)
        self.audio_projection = AudioProjection(cross_attention_dim=context, **audio_config)
        self.style_projection = StyleProjection(cross_attention_dim=context, **style_config)
        for name, attn in spatial_attentions(self.reference_net, "attn1").items():
            attn.set_processor(ReferenceAttnProcessor(name, "write"))
        for attn in spatial_attentions(self.reference_net, "attn2").values():
            attn.set_processor(ReferenceNetCrossAttnProcessor())
        self._install_processors(self.unet)

    def _install_processors(self, unet: nn.Module) -> None:
        context = self.config.unet_config["cross_attention_dim"]
        for name, attn in spatial_attentions(unet, "attn1").items():
            attn.set_processor(ReferenceAttnProcessor(name, "read"))
        for attn in spatial_attentions(unet, "attn2").values():
            attn.set_processor(AudioStyleAttnProcessor(attn.query_dim, context, attn.heads))

    def add_motion(self, motion_config: dict, adapter: MotionAdapter | None = None) -> None:
        """Stage 2's start: the image model becomes a video model, AnimateDiff motion modules
        (new, zero-output ones, or `adapter`'s) inserted after its spatial layers."""
        if self.config.motion_config is not None:
            raise ValueError("this denoiser has motion modules already")
        adapter = adapter or new_motion_adapter(motion_config)
        video = UNetMotionModel.from_unet2d(UNet2DConditionModel(**self.config.unet_config),
                                            adapter, load_weights=False)
        self._install_processors(video)
        missing, unexpected = video.load_state_dict(self.unet.state_dict(), strict=False)
        if unexpected or any("motion_modules" not in k for k in missing):
            raise ValueError(f"image and video UNet differ: {(unexpected or missing)[0]}")
        video.load_motion_modules(adapter)
        self.unet = video.to(self.device)
        self.register_to_config(motion_config=motion_config)

    @property
    def max_frames(self) -> int | None:
        motion = self.config.motion_config
        return None if motion is None else motion["motion_max_seq_length"]

    @property
    def audio_frames(self) -> int:
        """Frames in each frame's audio window (two Whisper steps per frame)."""
        return self.config.audio_config["window_steps"] // 2

    def encode_reference(self, reference_latents: Tensor) -> dict[str, Tensor]:
        """The ReferenceNet's features (layer name -> (B, L, C)) of (B, C, h, w) latents, and
        the latents themselves under `REFERENCE_LATENTS` when the denoiser reads them at input."""
        b = reference_latents.shape[0]
        inputs = AttentionInputs()
        context = reference_latents.new_zeros(b, 1, self.config.unet_config["cross_attention_dim"])
        timestep = torch.zeros(b, dtype=torch.long, device=reference_latents.device)
        self.reference_net(reference_latents, timestep, encoder_hidden_states=context,
                           cross_attention_kwargs={"inputs": inputs})
        if self.reference_in is None:
            return inputs.bank
        return inputs.bank | {REFERENCE_LATENTS: reference_latents}

    def _input_features(self, kps: Tensor, reference: dict[str, Tensor], keep: Tensor,
                        dtype: torch.dtype) -> Tensor:
        """What is added to conv_in's output of each of the B x F frames: the Head-Kps guider's
        features and the reference latents' (the video's one reference on each of its frames)."""
        frames = kps.shape[1]
        keep = keep.repeat_interleave(frames)
        features = self._kps_features(kps.flatten(0, 1).to(dtype), keep)
        if self.reference_in is None:
            return features
        latents = reference[REFERENCE_LATENTS].repeat_interleave(frames, dim=0).to(dtype)
        hole = self.config.get("reference_input_hole")
        if hole:
            latents = latents * outside_box(latents.shape[-2:], hole, latents.device, dtype)
        return features + self.reference_in(latents) * keep.to(dtype)[:, None, None, None]

    def _kps_features(self, images: Tensor, keep: Tensor) -> Tensor:
        """The guider's features of the kept images, zeros for the dropped ones (the guider does
        not run on them: guidance's unconditional half costs it nothing)."""
        if bool(keep.all()):
            return self.kps_guider(images)
        kept = self.kps_guider(images[keep])
        features = kept.new_zeros(len(images), *kept.shape[1:])
        features[keep] = kept
        return features

    def forward(self, latents: Tensor, timesteps: Tensor, reference: dict[str, Tensor],
                kps: Tensor, audio: Tensor | None = None, style: Tensor | None = None,
                keep: Tensor | None = None, style_scale: float = 1.0) -> Tensor:
        """latents (B, C, F, h, w), timesteps (B,), reference from `encode_reference`, kps
        (B, F, 3, H, W) in [0, 1], audio (B, F, 5, steps, 384) Whisper windows or None, style
        (B, d) a style-prior draw or None (no style attention), keep (B,) bool; returns the
        model's prediction, shaped as latents."""
        b, _, frames = latents.shape[:3]
        if self.max_frames is not None and frames > self.max_frames:
            raise SvpError(f"{frames} frames exceed the motion module's limit of "
                           f"{self.max_frames} (diffusion.motion.max_seq_length)")
        keep = torch.ones(b, dtype=torch.bool, device=latents.device) if keep is None else keep
        input_features = self._input_features(kps, reference, keep, latents.dtype)
        context = self.config.unet_config["cross_attention_dim"]
        if audio is None:
            tokens = latents.new_zeros(b * frames, 1, context)
            audio_keep = torch.zeros(b, device=latents.device)
        else:
            tokens = self.audio_projection(audio.flatten(0, 1).to(latents.dtype))
            audio_keep = keep.float()
        inputs = AttentionInputs(
            bank=reference, reference_keep=keep, audio_keep=audio_keep,
            style_tokens=None if style is None else self.style_projection(style.to(latents.dtype)),
            style_keep=keep.float() * style_scale)
        kwargs = {"encoder_hidden_states": tokens, "cross_attention_kwargs": {"inputs": inputs}}
        with added_to_conv_in(self.unet, input_features):
            if self.config.motion_config is not None:
                return self.unet(latents, timesteps, **kwargs).sample
            # the image model (stage 1): every frame on its own
            images = latents.permute(0, 2, 1, 3, 4).flatten(0, 1)
            out = self.unet(images, timesteps.repeat_interleave(frames), **kwargs).sample
            return out.unflatten(0, (b, frames)).permute(0, 2, 1, 3, 4)
