"""The generation pipeline, in the diffusers manner: one `__call__`, top to bottom.

    conditions  reference latent -> ReferenceNet features, once per video; Head-Kps images,
                audio windows and style tokens per frame
    latents     one noise tensor for the whole video (B=1, C, T, h, w) from the seed
    denoise     per timestep: every window of `window` frames (overlapping by `overlap`) is
                denoised with classifier-free guidance, the windows' predictions are blended
                (trapezoid weights, so each frame's prediction fades from one window into the
                next), and the scheduler steps once over the whole sequence
    decode      the VAE decodes `decode_batch` frames at a time; frames are yielded as they are
                decoded, so a caller can stream them to an encoder

Blending predictions at every timestep (V-Express's and MuseV's context windows; Hallo instead
feeds the last frames of a clip into the next) keeps the whole video one sample of the model:
there is no window boundary for a seam to sit on. Memory grows with the video only by its
latents and per-frame audio features (kilobytes per frame): Head-Kps images and audio windows are
made per window as they are needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

from components.config import DiffusionConfig
from components.diffusion.denoiser import Denoiser
from components.diffusion.frames import audio_windows, kps_images
from components.diffusion.sampler import Conditions, guided_prediction
from components.diffusion.schedule import sampling_scheduler
from components.diffusion.vae import decode, encode
from components.errors import SvpError
from components.progress import progress


@dataclass(frozen=True)
class GenerationInputs:
    reference: np.ndarray  # (R, R, 3) uint8, the portrait in the generator's framing
    kps: np.ndarray  # (T, 8, 2) Head-Kps per frame, crop pixels
    audio: np.ndarray  # (T, N_HIDDEN, 2, 384) Whisper states per frame, relative to silence
    style: np.ndarray | None  # (d,) a draw from the style prior, or None (no style attention)

    def __post_init__(self):
        if len(self.kps) != len(self.audio):
            raise SvpError(f"{len(self.kps)} Head-Kps frames but {len(self.audio)} audio frames")


def window_starts(n_frames: int, window: int, overlap: int) -> list[int]:
    """First frames of windows of `window` frames, `overlap` shared by neighbours, covering
    0..n_frames-1 (the last window ends at the last frame)."""
    if n_frames <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def blend_weights(window: int, overlap: int) -> torch.Tensor:
    """(window,) trapezoid: rising over the first `overlap` frames, falling over the last."""
    i = torch.arange(window, dtype=torch.float32)
    return torch.minimum(torch.minimum(i + 1, window - i), torch.tensor(overlap + 1.0)) / (
        overlap + 1)


class TalkingHeadPipeline:
    def __init__(self, vae: AutoencoderKL, denoiser: Denoiser, diffusion: DiffusionConfig,
                 window: int = 16, overlap: int = 4, window_batch: int = 4,
                 decode_batch: int = 16):
        limit = denoiser.max_frames
        if limit is None:
            raise SvpError("this denoiser has no motion modules (a stage-1 model): generate "
                           "with a stage-2 or stage-3 denoiser")
        if window > limit:
            raise SvpError(f"generate.window {window} exceeds the motion module's limit of "
                           f"{limit} frames")
        if not 0 <= overlap < window:
            raise SvpError(f"generate.overlap must lie in [0, window), got {overlap}")
        self.vae, self.denoiser, self.diffusion = vae.eval(), denoiser.eval(), diffusion
        self.window, self.overlap = window, overlap
        self.window_batch, self.decode_batch = window_batch, decode_batch

    @property
    def device(self) -> torch.device:
        return next(self.denoiser.parameters()).device

    @torch.no_grad()
    def __call__(self, inputs: GenerationInputs, *, steps: int, guidance: float, seed: int,
                 style_scale: float = 1.0) -> Iterator[np.ndarray]:
        """Frames (R, R, 3) uint8, in order."""
        d, device = self.diffusion, self.device
        n = len(inputs.kps)
        window = min(self.window, n)
        starts = window_starts(n, window, self.overlap)
        weights = blend_weights(window, self.overlap if n > window else 0).to(device)

        # conditions: the ReferenceNet once per video
        reference = encode(self.vae, inputs.reference[None]).to(device)
        bank = self.denoiser.encode_reference(reference)
        style = None if inputs.style is None else torch.from_numpy(inputs.style)[None].to(device)

        # latents: one noise tensor for the whole video
        scheduler = sampling_scheduler(d.noise)
        scheduler.set_timesteps(steps, device=device)
        generator = torch.Generator().manual_seed(seed)
        latents = torch.randn((1, reference.shape[1], n, *reference.shape[2:]),
                              generator=generator).to(device) * scheduler.init_noise_sigma

        # denoise: every window at every timestep, blended; one scheduler step per timestep
        timesteps = scheduler.timesteps
        for t in progress(timesteps, len(timesteps), f"generate ({n} frames)", "steps"):
            prediction = torch.zeros_like(latents)
            weight_sum = torch.zeros(n, device=device)
            for first in range(0, len(starts), self.window_batch):
                chunk = starts[first:first + self.window_batch]
                frames = [np.arange(s, s + window) for s in chunk]
                conditions = self._conditions(inputs, frames, bank, style, guidance, style_scale)
                batch = torch.cat([latents[:, :, s:s + window] for s in chunk])
                out = guided_prediction(self.denoiser, scheduler, batch, t, conditions)
                for s, window_out in zip(chunk, out, strict=True):
                    prediction[0, :, s:s + window] += window_out * weights[:, None, None]
                    weight_sum[s:s + window] += weights
            prediction = prediction / weight_sum[:, None, None]
            latents = scheduler.step(prediction, t, latents).prev_sample

        # decode, a few frames at a time
        for first in range(0, n, self.decode_batch):
            chunk = latents[0, :, first:first + self.decode_batch].permute(1, 0, 2, 3)
            yield from decode(self.vae, chunk)

    def _conditions(self, inputs: GenerationInputs, frames: list[np.ndarray],
                    bank: dict[str, torch.Tensor], style: torch.Tensor | None, guidance: float,
                    style_scale: float) -> Conditions:
        d, device, k = self.diffusion, self.device, len(frames)
        kps = torch.from_numpy(np.stack([kps_images(inputs.kps[f], d.resolution)
                                         for f in frames])).to(device)
        audio = torch.from_numpy(np.stack([audio_windows(inputs.audio, f, d.audio.window_s)
                                           for f in frames])).to(device)
        reference = {name: f.expand(k, *f.shape[1:]) for name, f in bank.items()}
        return Conditions.guided(reference, kps, audio,
                                 None if style is None else style.expand(k, -1), guidance,
                                 style_scale)
