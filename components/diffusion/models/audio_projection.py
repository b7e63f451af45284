"""Audio tokens per video frame: the frame's 0.2 s Whisper window to a few cross-attention tokens.

The window (`components.features.audio.audio_window`) holds Whisper-Tiny's 5 hidden states x
2·k encoder steps x 384 (k frames of 2 steps at 25 fps). Each of those 5·2k vectors is projected
to `vector_dim`, the window is flattened and an MLP makes `n_tokens` layer-normed tokens: the
design of Hallo's, Sonic's and DICE-Talk's audio projections. (V-Express uses a Perceiver
resampler instead: on the embedded profile its tokens came out the same for every frame after
stage 2; this MLP learnt frame-dependent tokens where the Perceiver had not.) Frame i's spatial
cross-attention reads only frame i's tokens.

The states arrive relative to silence's (`relative_to_silence`) and are standardised per hidden
state and channel with the training clips' statistics (`fit_normaliser`, when stage 2 starts;
buffers saved with the weights). Relative to silence, a constant offset about ten times the
speech's own variation is left; standardised, the speech is what the MLP sees (two clips' tokens
at the same frames then differ by 63%, against 2% on raw states).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from components.features.audio import N_HIDDEN, WIDTH


class AudioProjection(nn.Module):
    def __init__(self, window_steps: int, cross_attention_dim: int, vector_dim: int,
                 hidden_dim: int, n_tokens: int):
        super().__init__()
        self.n_tokens = n_tokens
        self.register_buffer("feature_mean", torch.zeros(N_HIDDEN, WIDTH))
        self.register_buffer("feature_std", torch.ones(N_HIDDEN, WIDTH))
        self.vectors = nn.Sequential(nn.LayerNorm(WIDTH), nn.Linear(WIDTH, vector_dim))
        self.mlp = nn.Sequential(
            nn.Linear(N_HIDDEN * window_steps * vector_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, hidden_dim), nn.SiLU(),
            nn.Linear(hidden_dim, n_tokens * cross_attention_dim))

    @torch.no_grad()
    def fit_normaliser(self, states: Tensor) -> None:
        """Per (hidden state, channel) mean and spread of (..., N_HIDDEN, steps, 384) states."""
        flat = states.float().movedim(-3, 0).flatten(1, -2)  # (N_HIDDEN, n, 384)
        self.feature_mean.copy_(flat.mean(1))
        self.feature_std.copy_(flat.std(1).clamp_min(1e-3))

    def forward(self, windows: Tensor) -> Tensor:
        """(N, N_HIDDEN, window_steps, 384) -> (N, n_tokens, cross_attention_dim)."""
        windows = (windows - self.feature_mean[:, None]) / self.feature_std[:, None]
        vectors = self.vectors(windows).flatten(1)
        return self.mlp(vectors).view(len(windows), self.n_tokens, -1)
