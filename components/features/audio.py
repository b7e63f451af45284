"""Whisper-Tiny encoder features aligned to video frames.

The real model code (openai-whisper) runs with a checkpoint from a local path
(`features.whisper_checkpoint`, e.g. `tiny.pt`); with none, a stand-in encoder of exactly
Whisper-Tiny's shape (80 mels, 384 wide, 4 blocks, 6 heads) with fixed-seed random weights, so the
pipeline runs offline and every shape downstream is the real one.

Whisper's encoder insists on 30 s inputs. We run it on each clip's own length instead (the
sinusoidal position table sliced to the clip; chunks of at most 30 s), which costs time in
proportion to the audio, not 30 s per clip; `benchmarks/features.py` compares both.

All 5 hidden states are kept (the embedding and each of the 4 blocks, the last after the final
layer norm, as in HF's `output_hidden_states`). The encoder runs at 50 Hz, so each 25 fps frame
owns 2 steps; `audio_window` gathers the 0.2 s window around a frame.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from components.errors import SvpError

SAMPLE_RATE = 16000
STEPS_PER_SECOND = 50
N_HIDDEN = 5
WIDTH = 384
MAX_STEPS = 1500  # 30 s
TINY = {"n_mels": 80, "n_ctx": 1500, "n_state": 384, "n_head": 6, "n_layer": 4}
STANDIN_SEED = 20250625


@cache
def load_encoder(checkpoint: str | None):
    """Whisper's AudioEncoder from a local checkpoint, or the seeded stand-in."""
    import whisper
    from whisper.model import AudioEncoder

    if checkpoint:
        if not Path(checkpoint).is_file():
            raise SvpError(f"{checkpoint}: Whisper checkpoint not found "
                           "(set features.whisper_checkpoint, or null for the stand-in)")
        encoder = whisper.load_model(checkpoint, device="cpu").encoder
    else:
        torch.manual_seed(STANDIN_SEED)
        encoder = AudioEncoder(**TINY)
    return encoder.eval()


def _hidden_states(encoder, mel: torch.Tensor) -> torch.Tensor:
    """(N_HIDDEN, steps, width) for a mel (80, frames) of at most 30 s."""
    x = F.gelu(encoder.conv1(mel[None]))
    x = F.gelu(encoder.conv2(x)).permute(0, 2, 1)
    x = x + encoder.positional_embedding[: x.shape[1]]
    states = [x]
    for block in encoder.blocks:
        x = block(x)
        states.append(x)
    states[-1] = encoder.ln_post(x)
    return torch.cat(states)


@torch.inference_mode()
def encode_clip(samples: np.ndarray, checkpoint: str | None = None) -> np.ndarray:
    """(N_HIDDEN, steps, width) float32 at 50 Hz for 16 kHz mono samples, no 30 s padding."""
    import whisper

    encoder = load_encoder(checkpoint)
    mel = whisper.log_mel_spectrogram(torch.from_numpy(samples.astype(np.float32)))
    mel = mel[:, : mel.shape[1] // 2 * 2]
    chunks = [_hidden_states(encoder, mel[:, i:i + 2 * MAX_STEPS])
              for i in range(0, mel.shape[1], 2 * MAX_STEPS)]
    return torch.cat(chunks, dim=1).numpy()


@torch.inference_mode()
def encode_clip_padded(samples: np.ndarray, checkpoint: str | None = None) -> np.ndarray:
    """The usual way, for comparison: pad to 30 s, run the full encoder, keep the clip's steps."""
    import whisper

    encoder = load_encoder(checkpoint)
    steps = len(samples) * STEPS_PER_SECOND // SAMPLE_RATE
    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(
        samples.astype(np.float32))))
    return _hidden_states(encoder, mel)[:, :steps].numpy()


def per_frame(states: np.ndarray, n_frames: int, fps: float) -> np.ndarray:
    """(n_frames, N_HIDDEN, 2, width): the 2 encoder steps starting at each frame's time."""
    start = np.round(np.arange(n_frames) * STEPS_PER_SECOND / fps).astype(int)
    index = np.clip(start[:, None] + [0, 1], 0, states.shape[1] - 1)
    return states[:, index].transpose(1, 0, 2, 3)


@cache
def _silence_frames(checkpoint: str | None, n_frames: int, fps: float) -> np.ndarray:
    samples = np.zeros(round(n_frames * SAMPLE_RATE / fps), np.float32)
    return per_frame(encode_clip(samples, checkpoint), n_frames, fps)


def relative_to_silence(frames: np.ndarray, checkpoint: str | None = None,
                        fps: float = 25) -> np.ndarray:
    """Per-frame states (T, N_HIDDEN, 2, width) minus those of a silence as long (the same
    positions, and the same context for the attention blocks).

    The position table is a fixed offset on every state; in the random stand-in it is ~99% of the
    states' variance, so a model reading raw states learns the frame's position in the clip
    (which predicts the mouth opening with R² 0.15 on held-out clips) and not the speech.
    Relative to silence, what is left is what the sound adds."""
    return frames.astype(np.float32) - _silence_frames(checkpoint, len(frames), fps)


def audio_window(frames: np.ndarray, t: int, seconds: float = 0.2, fps: float = 25) -> np.ndarray:
    """The (N_HIDDEN, 2 * k, width) window centred on frame `t` from per-frame features
    (T, N_HIDDEN, 2, width), k = seconds * fps frames, edges repeated."""
    k = max(1, round(seconds * fps))
    index = np.clip(np.arange(t - k // 2, t - k // 2 + k), 0, len(frames) - 1)
    window = frames[index]  # (k, N_HIDDEN, 2, width)
    return window.transpose(1, 0, 2, 3).reshape(N_HIDDEN, 2 * k, -1)
