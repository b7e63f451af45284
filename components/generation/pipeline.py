"""The generator: one diffusers `DiffusionPipeline`, saved as one folder and loaded as one object
by everything that samples (the stage checks, `svp evaluate`, `svp promote`'s registry version,
`svp generate`, the served model, the benchmarks). Its one denoising loop is `denoise`:

    conditions  reference latents -> ReferenceNet features, once per video; Head-Kps images,
                audio windows and style tokens per window
    latents     one noise tensor per video (B, C, T, h, w), from the seed's latent stream
    denoise     per timestep: every window of `window` frames (overlapping by `overlap`) is
                denoised with classifier-free guidance, the windows' predictions are blended
                (trapezoid weights, so each frame's prediction fades from one window into the
                next), and the scheduler steps once over the whole sequence (diffusers' Euler is
                stateful: one `step` per timestep)
    decode      the VAE decodes `decode_batch` frames at a time, yielded as they are decoded

`save_pretrained` writes `model_index.json` (the parts, and how it samples: steps, guidance,
window, overlap, plus where its parts came from), the scheduler's config and each part's
`save_pretrained` folder; `from_pretrained` reads them back, so a saved generator samples as it
was saved whatever params say now. Blending predictions at every timestep (V-Express's and
MuseV's context windows) keeps the whole video one sample of the model: there is no window
boundary for a seam to sit on. Memory grows with the video only by its latents and per-frame
audio features; Head-Kps images and audio windows are made per window as they are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from torch import Tensor

from components.diffusion.frames import audio_windows, kps_images
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.models.vae import decode, encode
from components.errors import SvpError
from components.generation.input_settings import InputSettings
from components.generation.style_presets import StylePresets
from components.progress import progress
from components.style.extractor import StyleExtractor
from components.training.seeds import torch_generator


@dataclass(frozen=True)
class GenerationInputs:
    reference: np.ndarray  # (R, R, 3) uint8, the portrait in the generator's framing
    kps: np.ndarray  # (T, 8, 2) Head-Kps per frame, crop pixels
    audio: np.ndarray | None  # (T, N_HIDDEN, 2, 384) Whisper states relative to silence, or None
    style: np.ndarray | None  # (d,) a draw from the style prior, or None (no style attention)

    def __post_init__(self):
        if self.audio is not None and len(self.kps) != len(self.audio):
            raise SvpError(f"{len(self.kps)} Head-Kps frames but {len(self.audio)} audio frames")


@dataclass(frozen=True)
class Sampling:
    """How a call samples: the generator's saved settings unless a caller overrides them."""

    steps: int
    guidance: float

    def __post_init__(self):
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise SvpError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise SvpError(f"guidance must be a finite number of at least 0, got "
                           f"{self.guidance!r}")


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


def blend_weights(window: int, overlap: int) -> Tensor:
    """(window,) trapezoid: rising over the first `overlap` frames, falling over the last."""
    i = torch.arange(window, dtype=torch.float32)
    return torch.minimum(torch.minimum(i + 1, window - i), torch.tensor(overlap + 1.0)) / (
        overlap + 1)


def _twice(x: Tensor | None) -> Tensor | None:
    return None if x is None else torch.cat([x, x])


def guided_prediction(denoiser: Denoiser, scheduler: EulerDiscreteScheduler, latents: Tensor,
                      t: Tensor, reference: dict[str, Tensor], kps: Tensor,
                      audio: Tensor | None, style: Tensor | None, guidance: float,
                      style_scale: float = 1.0) -> Tensor:
    """`uncond + guidance * (cond - uncond)` for `latents` at timestep `t`: the denoiser sees the
    batch twice, first with every condition dropped (no reference, Head-Kps, audio or style:
    what `uncond_probability` trained), then with them. Guidance 1 needs only the second."""
    model_input = scheduler.scale_model_input(latents, t)
    b = len(latents)
    if guidance == 1.0:
        return denoiser(model_input, t.expand(b), reference, kps, audio, style, None,
                        style_scale)
    keep = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    prediction = denoiser(_twice(model_input), t.expand(2 * b),
                          {name: _twice(f) for name, f in reference.items()}, _twice(kps),
                          _twice(audio), _twice(style), keep.to(latents.device), style_scale)
    uncond, cond = prediction.chunk(2)
    return uncond + guidance * (cond - uncond)


class TalkingHeadPipeline(DiffusionPipeline):
    # the stage checks sample without these; a saved generator has them (style presets since
    # the demo: an older generator loads without them)
    _optional_components: ClassVar[list[str]] = ["style_extractor", "input_settings",
                                                 "style_presets"]

    def __init__(self, vae: AutoencoderKL, denoiser: Denoiser,
                 scheduler: EulerDiscreteScheduler, style_extractor: StyleExtractor | None = None,
                 input_settings: InputSettings | None = None,
                 style_presets: StylePresets | None = None, resolution: int = 64,
                 steps: int = 25, guidance: float = 2.0, window: int = 16, overlap: int = 4,
                 parts: dict | None = None):
        super().__init__()
        limit = denoiser.max_frames
        if limit is not None and window > limit:
            raise SvpError(f"window {window} exceeds the motion module's limit of {limit} frames")
        if not 0 <= overlap < window:
            raise SvpError(f"overlap must lie in [0, window), got {overlap}")
        Sampling(steps, guidance)
        self.register_modules(vae=vae.eval(), denoiser=denoiser.eval(), scheduler=scheduler,
                              style_extractor=style_extractor and style_extractor.eval(),
                              input_settings=input_settings, style_presets=style_presets)
        self.register_to_config(resolution=resolution, steps=steps, guidance=guidance,
                                window=window, overlap=overlap, parts=parts or {})
        self.source = None  # where it was loaded from (`assemble.load_generator`)

    @property
    def device(self) -> torch.device:
        return self.denoiser.device

    def sampling(self, steps: int | None = None, guidance: float | None = None) -> Sampling:
        """The saved settings, with a caller's explicit overrides (None: the saved value)."""
        return Sampling(self.config.steps if steps is None else steps,
                        float(self.config.guidance if guidance is None else guidance))

    @torch.no_grad()
    def __call__(self, inputs: GenerationInputs, *, seed: int = 0, steps: int | None = None,
                 guidance: float | None = None, style_scale: float = 1.0,
                 window_batch: int = 4, decode_batch: int = 16,
                 on_step: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """One video's frames (R, R, 3) uint8, in order, decoded as they are needed;
        `on_step(step, steps)` after each denoising step."""
        latents = self.denoise([inputs], self.sampling(steps, guidance), seed, style_scale,
                               window_batch, on_step)
        yield from self.decode_frames(latents[0], decode_batch)

    @torch.no_grad()
    def generate_batch(self, videos: list[GenerationInputs], *, seed: int = 0,
                       steps: int | None = None, guidance: float | None = None,
                       style_scale: float = 1.0, window_batch: int = 4) -> np.ndarray:
        """(B, T, R, R, 3) uint8 for videos of one length (the stage checks' batches); video b
        is what `__call__` makes of it alone."""
        latents = self.denoise(videos, self.sampling(steps, guidance), seed, style_scale,
                               window_batch)
        return np.stack([np.stack(list(self.decode_frames(v))) for v in latents])

    @torch.no_grad()
    def denoise(self, videos: list[GenerationInputs], sampling: Sampling, seed: int,
                style_scale: float = 1.0, window_batch: int = 4,
                on_step: Callable[[int, int], None] | None = None) -> Tensor:
        """Final latents (B, C, T, h, w): the project's one denoising loop."""
        n, device = len(videos[0].kps), self.device
        if any(len(v.kps) != n for v in videos):
            raise SvpError("the videos of one batch must have the same number of frames")
        window = min(self.config.window, n)
        starts = window_starts(n, window, self.config.overlap)
        weights = blend_weights(window, self.config.overlap if n > window else 0).to(device)

        # conditions: the ReferenceNet once per video
        reference = encode(self.vae, np.stack([v.reference for v in videos])).to(device)
        bank = self.denoiser.encode_reference(reference)
        style = None if videos[0].style is None else \
            torch.from_numpy(np.stack([v.style for v in videos])).to(device)

        # latents: one noise tensor per video, from the seed's latent stream
        scheduler = self.scheduler
        scheduler.set_timesteps(sampling.steps, device=device)
        shape = (1, reference.shape[1], n, *reference.shape[2:])
        latents = torch.cat([torch.randn(shape, generator=torch_generator(seed, "latents", b))
                             for b in range(len(videos))]).to(device) * scheduler.init_noise_sigma

        # denoise: every window at every timestep, blended; one scheduler step per timestep
        b = len(videos)
        for step, t in enumerate(progress(scheduler.timesteps, len(scheduler.timesteps),
                                          f"denoise ({b} x {n} frames)", "steps")):
            prediction = torch.zeros_like(latents)
            weight_sum = torch.zeros(n, device=device)
            for first in range(0, len(starts), window_batch):
                chunk = starts[first:first + window_batch]
                kps, audio = self._window_conditions(videos, chunk, window)
                k = len(chunk)
                out = guided_prediction(
                    self.denoiser, scheduler,
                    torch.cat([latents[:, :, s:s + window] for s in chunk]), t,
                    {name: f.repeat(k, *([1] * (f.dim() - 1))) for name, f in bank.items()},
                    kps, audio, None if style is None else style.repeat(k, 1),
                    sampling.guidance, style_scale)
                for i, s in enumerate(chunk):
                    prediction[:, :, s:s + window] += out[i * b:(i + 1) * b] * \
                        weights[:, None, None]
                    weight_sum[s:s + window] += weights
            prediction = prediction / weight_sum[:, None, None]
            latents = scheduler.step(prediction, t, latents).prev_sample
            if on_step is not None:
                on_step(step + 1, len(scheduler.timesteps))
        return latents

    def _window_conditions(self, videos: list[GenerationInputs], starts: list[int],
                           window: int) -> tuple[Tensor, Tensor | None]:
        """Head-Kps images (K·B, F, 3, R, R) and audio windows of the windows at `starts`,
        window-major (the order `denoise` concatenates latents in)."""
        size = self.config.resolution
        frames = [np.arange(s, s + window) for s in starts]
        kps = np.stack([kps_images(v.kps[f], size) for f in frames for v in videos])
        audio = None
        if videos[0].audio is not None:
            k = self.denoiser.audio_frames
            audio = torch.from_numpy(np.stack([audio_windows(v.audio, f, k)
                                               for f in frames for v in videos])).to(self.device)
        return torch.from_numpy(kps).to(self.device), audio

    def decode_frames(self, latents: Tensor, decode_batch: int = 16) -> Iterator[np.ndarray]:
        """(C, T, h, w) latents of one video -> frames, `decode_batch` at a time."""
        for first in range(0, latents.shape[1], decode_batch):
            yield from decode(self.vae, latents[:, first:first + decode_batch].permute(1, 0, 2, 3))
