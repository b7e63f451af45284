"""The style extractor: per-frame expression and audio -> a Gaussian style prior.

    exp (B, T, E) --Linear--> + pos --Transformer--> h_exp ┐
                                                           ├ cross-attention (exp attends audio)
    audio (B, T, A) --layer mix--Linear--> + pos --Transformer--> h_aud ┘
        -> style-aware sequence (B, T, d) -> attention pooling (a learnt query scores each frame,
           softmax over valid frames) -> mean (B, d), log-variance (B, d)
    style = mean + exp(logvar / 2) * noise   (reparameterisation)

Audio frames arrive as the features stage stores them: Whisper's 5 hidden states x 2 steps x
384 per frame; the branch averages the 2 steps and mixes the 5 states with learnt softmax weights
(as EchoMimic/Sonic do) before projecting. A modality that is dropped arrives as zeros with its
`*_present` flag false, and the branch output is zeroed for those samples.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import Tensor, nn

N_AUDIO_STATES, AUDIO_STEPS, AUDIO_WIDTH = 5, 2, 384


class Branch(nn.Module):
    """Input projection, learnt positions, a pre-norm Transformer encoder."""

    def __init__(self, in_dim: int, d_model: int, n_layers: int, n_heads: int, max_frames: int,
                 dropout: float):
        super().__init__()
        self.proj = nn.Linear(in_dim, d_model)
        self.pos = nn.Parameter(torch.zeros(max_frames, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout,
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)

    def forward(self, x: Tensor, pad: Tensor) -> Tensor:
        h = self.proj(x) + self.pos[: x.shape[1]]
        return self.encoder(h, src_key_padding_mask=pad)


class StyleExtractor(ModelMixin, ConfigMixin):
    """Saved and loaded as diffusers models are: `save_pretrained` writes `config.json` and
    safetensors weights, `from_pretrained` reads them back."""

    @register_to_config
    def __init__(self, expression_dim: int = 16, d_model: int = 64, n_layers: int = 2,
                 n_heads: int = 4, max_frames: int = 256, dropout: float = 0.1):
        super().__init__()
        sizes = {"d_model": d_model, "n_layers": n_layers, "n_heads": n_heads,
                 "max_frames": max_frames, "dropout": dropout}
        self.expression = Branch(expression_dim, **sizes)
        self.state_mix = nn.Parameter(torch.zeros(N_AUDIO_STATES))
        self.audio = Branch(AUDIO_WIDTH, **sizes)
        self.fuse = nn.MultiheadAttention(d_model, n_heads, dropout, batch_first=True)
        self.fuse_norm = nn.LayerNorm(d_model)
        self.score = nn.Linear(d_model, 1)  # the pooling query
        self.mean = nn.Linear(d_model, d_model)
        self.logvar = nn.Linear(d_model, d_model)

    def forward(self, expression: Tensor, audio: Tensor, valid: Tensor,
                expression_present: Tensor, audio_present: Tensor) -> tuple[Tensor, Tensor]:
        """expression (B, T, E), audio (B, T, 3840), valid (B, T) bool, *_present (B,) bool;
        returns mean and log-variance (B, d)."""
        pad = ~valid
        b, t, _ = audio.shape
        audio = audio.view(b, t, N_AUDIO_STATES, AUDIO_STEPS, AUDIO_WIDTH).mean(3)
        audio = (audio * self.state_mix.softmax(0)[:, None]).sum(2)

        h_exp = self.expression(expression, pad) * expression_present[:, None, None]
        h_aud = self.audio(audio, pad) * audio_present[:, None, None]
        fused, _ = self.fuse(h_exp, h_aud, h_aud, key_padding_mask=pad)
        h = self.fuse_norm(h_exp + h_aud + fused)

        scores = self.score(h).squeeze(-1).masked_fill(pad, float("-inf"))
        pooled = (scores.softmax(dim=1)[..., None] * h).sum(1)
        return self.mean(pooled), self.logvar(pooled).clamp(-10, 10)


def sample_style(mean: Tensor, logvar: Tensor, generator: torch.Generator | None = None):
    """A draw from the style prior by reparameterisation (noise drawn on the CPU generator, so
    a seed gives the same draw on any device)."""
    noise = torch.randn(mean.shape, generator=generator, dtype=mean.dtype).to(mean.device)
    return mean + (0.5 * logvar).exp() * noise
