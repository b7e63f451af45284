"""Style tokens: a draw from the intrinsic style prior mapped to the style cross-attention's
tokens (an MLP to `n_tokens` x dim, layer-normed per token, as DICE-Talk's emotion projection and
IP-Adapter's image projection do)."""

from __future__ import annotations

from torch import Tensor, nn


class StyleProjection(nn.Module):
    def __init__(self, style_dim: int, cross_attention_dim: int, hidden_dim: int, n_tokens: int):
        super().__init__()
        self.n_tokens = n_tokens
        self.mlp = nn.Sequential(nn.Linear(style_dim, hidden_dim), nn.SiLU(),
                                 nn.Linear(hidden_dim, n_tokens * cross_attention_dim))
        self.norm = nn.LayerNorm(cross_attention_dim)

    def forward(self, style: Tensor) -> Tensor:
        """(B, style_dim) -> (B, n_tokens, cross_attention_dim)."""
        return self.norm(self.mlp(style).view(style.shape[0], self.n_tokens, -1))
