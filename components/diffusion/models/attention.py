"""The denoiser's extra attentions, as diffusers attention processors (no patched forwards).

Every spatial transformer block of SD's UNet has `attn1` (self-attention) and `attn2` (cross-
attention). SVP gives them these processors:

- `ReferenceAttnProcessor` on `attn1`. In the ReferenceNet (`write`) it keeps its input, the
  block's normed hidden states, under its layer name; in the denoising UNet (`read`) the same
  layer attends over its own tokens and the reference frame's tokens of that layer, keys and
  values from the same `to_k`/`to_v`. This is AnimateAnyone's variant (Hallo, EchoMimic,
  AniPortrait), not V-Express's separate `attn1_5` layer: no new weights, and the reference
  path starts as SD's own self-attention. A sample whose reference is dropped (classifier-free
  guidance) attends over its own tokens only.
- `AudioStyleAttnProcessor` on `attn2`: SD's text cross-attention reads the frame's audio tokens
  (V-Express), and a second, zero-initialised cross-attention of its own reads the style tokens
  (SVP's style projection layer; it trains alone in stage 3). A dropped condition contributes
  nothing; `style_scale` 0 switches the style attention off.
- `ReferenceNetCrossAttnProcessor` on the ReferenceNet's `attn2`: plain cross-attention; the
  ReferenceNet reads a zero context, as in V-Express.

What the processors read arrives through the UNet's `cross_attention_kwargs` as one
`AttentionInputs`, prepared per call by `Denoiser` (batch B videos of F frames; the UNet sees
B·F images).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import Tensor, nn


@dataclass
class AttentionInputs:
    """What the processors read or write in one UNet call."""

    bank: dict[str, Tensor] = field(default_factory=dict)  # layer name -> (B, L, C) reference
    reference_keep: Tensor | None = None  # (B,) bool: False = this sample has no reference
    audio_keep: Tensor | None = None  # (B,) float: 0 = no audio
    style_tokens: Tensor | None = None  # (B, N, D), or None: no style attention at all
    style_keep: Tensor | None = None  # (B,) float: 0 = no style, style_scale otherwise


def _per_image(x: Tensor, n_images: int) -> Tensor:
    """A per-video tensor (B, ...) repeated for each of the B·F images the UNet sees."""
    return x if x.shape[0] == n_images else x.repeat_interleave(n_images // x.shape[0], dim=0)


def _attend(attn: Attention, query_states: Tensor, context: Tensor,
            mask: Tensor | None = None) -> Tensor:
    """`attn`'s projections and multi-head attention of `query_states` (N, Lq, C) over `context`
    (N, Lk, Cc); `mask` (N, Lk) bool keeps keys where True."""
    n = query_states.shape[0]
    q, k, v = attn.to_q(query_states), attn.to_k(context), attn.to_v(context)
    head_dim = k.shape[-1] // attn.heads
    q, k, v = (x.view(n, -1, attn.heads, head_dim).transpose(1, 2) for x in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if mask is None
                                         else mask[:, None, None, :])
    out = out.transpose(1, 2).reshape(n, -1, attn.heads * head_dim).to(q.dtype)
    return attn.to_out[1](attn.to_out[0](out))


class ReferenceAttnProcessor:
    """Self-attention that writes (ReferenceNet) or reads (denoiser) the reference bank."""

    def __init__(self, name: str, mode: str):
        if mode not in ("write", "read"):
            raise ValueError(f"mode must be write or read, got {mode}")
        self.name, self.mode = name, mode

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, inputs: AttentionInputs | None = None) -> Tensor:
        if inputs is None:
            raise ValueError(f"{self.name}: the UNet was called without AttentionInputs")
        if self.mode == "write":
            inputs.bank[self.name] = hidden_states
            return _attend(attn, hidden_states, hidden_states)
        n, length = hidden_states.shape[:2]
        reference = _per_image(inputs.bank[self.name], n).to(hidden_states.dtype)
        context = torch.cat([hidden_states, reference], dim=1)
        mask = None
        if inputs.reference_keep is not None and not bool(inputs.reference_keep.all()):
            keep = _per_image(inputs.reference_keep, n)
            own = torch.ones(n, length, dtype=torch.bool, device=keep.device)
            mask = torch.cat([own, keep[:, None].expand(n, reference.shape[1])], dim=1)
        return _attend(attn, hidden_states, context, mask)


class AudioStyleAttnProcessor(nn.Module):
    """`attn2` of the denoiser: audio cross-attention plus the style cross-attention."""

    def __init__(self, hidden_size: int, style_dim: int, heads: int):
        super().__init__()
        self.style = Attention(query_dim=hidden_size, cross_attention_dim=style_dim, heads=heads,
                               dim_head=hidden_size // heads)
        nn.init.zeros_(self.style.to_out[0].weight)
        nn.init.zeros_(self.style.to_out[0].bias)

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, inputs: AttentionInputs | None = None) -> Tensor:
        n = hidden_states.shape[0]
        out = _attend(attn, hidden_states, encoder_hidden_states)
        if inputs is not None and inputs.audio_keep is not None:
            out = out * _per_image(inputs.audio_keep, n).to(out.dtype)[:, None, None]
        if inputs is not None and inputs.style_tokens is not None:
            tokens = _per_image(inputs.style_tokens, n).to(hidden_states.dtype)
            style = _attend(self.style, hidden_states, tokens)
            out = out + style * _per_image(inputs.style_keep, n).to(out.dtype)[:, None, None]
        return out


class ReferenceNetCrossAttnProcessor:
    """The ReferenceNet's `attn2`: plain cross-attention (it reads a zero context)."""

    def __call__(self, attn: Attention, hidden_states: Tensor, encoder_hidden_states=None,
                 attention_mask=None, temb=None, inputs: AttentionInputs | None = None) -> Tensor:
        return _attend(attn, hidden_states, encoder_hidden_states)


def spatial_attentions(unet: nn.Module, which: str) -> dict[str, Attention]:
    """The `attn1` or `attn2` of every spatial transformer block, by name (motion modules
    excluded). The names are the same in a UNet2DConditionModel and its UNetMotionModel."""
    return {name: module for name, module in unet.named_modules()
            if name.endswith(f".{which}") and ".attentions." in name
            and "motion_modules" not in name and isinstance(module, Attention)}
