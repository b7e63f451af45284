"""The generator: one diffusers `DiffusionPipeline`, saved as one folder and loaded as one object
by everything that samples (the stage checks, `svp evaluate`, `svp promote`'s registry version,
`svp generate`, the served model, the benchmarks). Its one denoising loop is `denoise`:

    conditions  reference latents -> ReferenceNet features, once per video; Head-Kps images,
                audio windows and style tokens per window
    latents     one noise tensor per video (B, C, T, h, w), from the seed's latent stream
    denoise     per timestep: every window of `window` frames (overlapping by `overlap`) is
                denoised (with classifier-free guidance on the sampler's guided steps), the
                windows' predictions are blended (trapezoid weights, so each frame's prediction
                fades from one window into the next), and the solver steps once over the whole
                sequence (diffusers' solvers are stateful: one `step` per timestep)
    decode      the VAE decodes `decode_batch` frames at a time, yielded as they are decoded

Two samplers: "paper" (Euler, `steps` steps, guidance on every step: 2 denoiser passes a step)
and "fast" (DPM-Solver++ at 5 steps, no guidance on the first, highest-noise one: 9 passes a
step's window instead of 50, benchmarks/generation.md). `save_pretrained` writes
`model_index.json` (the parts, and how it samples: both samplers, window, overlap, plus where
its parts came from), the scheduler's config and each part's
`save_pretrained` folder; `from_pretrained` reads them back, so a saved generator samples as it
was saved whatever params say now. Blending predictions at every timestep (V-Express's and
MuseV's context windows) keeps the whole video one sample of the model: there is no window
boundary for a seam to sit on. Memory grows with the video only by its latents and per-frame
audio features; Head-Kps images and audio windows are made per window as they are needed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import numpy as np
import torch
from diffusers import DiffusionPipeline, EulerDiscreteScheduler
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from torch import Tensor

from components.config import DiffusionConfig
from components.diffusion.frames import audio_windows, kps_drawings
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.models.schedule import SOLVERS, sampling_scheduler, solver_scheduler
from components.diffusion.models.vae import decode, encode
from components.errors import SvpError
from components.generation.input_settings import InputSettings
from components.generation.style_presets import StylePresets
from components.precision import autocast
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


QUALITIES = ("paper", "fast")


def _whole(value, least: int) -> bool:
    return not isinstance(value, bool) and isinstance(value, int) and value >= least


@dataclass(frozen=True)
class Sampling:
    """How a call samples: one of the generator's saved samplers unless a caller overrides its
    steps or guidance. `guidance_from`: classifier-free guidance from that step on (0-based);
    the first, highest-noise steps' guidance buys little (Kynkäänniemi et al. 2024, "Applying
    guidance in a limited interval"), while the last ones' is what lip sync needs (measured:
    guiding only the first steps of 4-8 cost 4-21% of Sync-C)."""

    steps: int
    guidance: float
    solver: str = "euler"
    guidance_from: int = 0

    def __post_init__(self):
        if not _whole(self.steps, 1):
            raise SvpError(f"steps must be a whole number of at least 1, got {self.steps!r}")
        if not math.isfinite(self.guidance) or self.guidance < 0:
            raise SvpError(f"guidance must be a finite number of at least 0, got "
                           f"{self.guidance!r}")
        if self.solver not in SOLVERS:
            raise SvpError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not _whole(self.guidance_from, 0):
            raise SvpError(f"guidance_from must be a whole number of at least 0, got "
                           f"{self.guidance_from!r}")

    def guided(self, step: int) -> bool:
        """Whether step `step` (0-based) is guided."""
        return self.guidance != 1.0 and step >= self.guidance_from

    @property
    def passes(self) -> int:
        """Denoiser passes a window costs."""
        return sum(2 if self.guided(i) else 1 for i in range(self.steps))

    def describe(self) -> str:
        first = self.guidance_from + 1
        guided = "every step" if first == 1 else "no step" if first > self.steps else \
            f"step {first}" if first == self.steps else f"steps {first}-{self.steps}"
        guidance = "no guidance" if self.guidance == 1.0 else \
            f"guidance {self.guidance:g} on {guided}"
        return f"{self.solver}, {self.steps} steps, {guidance} ({self.passes} denoiser passes)"


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


def guided_prediction(denoiser: Denoiser, scheduler: SchedulerMixin, latents: Tensor,
                      t: Tensor, reference: dict[str, Tensor], kps: Tensor,
                      audio: Tensor | None, style: Tensor | None, guidance: float,
                      style_scale: float = 1.0) -> Tensor:
    """`uncond + guidance * (cond - uncond)` for `latents` at timestep `t`: the denoiser sees the
    batch twice, first with every condition dropped (no reference, Head-Kps, audio or style:
    what `uncond_probability` trained), then with them. Guidance 1 needs only the second."""
    model_input = scheduler.scale_model_input(latents, t)
    b = len(latents)
    if guidance == 1.0:  # fp32 out, also under bf16 autocast
        return denoiser(model_input, t.expand(b), reference, kps, audio, style, None,
                        style_scale).float()
    keep = torch.cat([torch.zeros(b, dtype=torch.bool), torch.ones(b, dtype=torch.bool)])
    prediction = denoiser(_twice(model_input), t.expand(2 * b),
                          {name: _twice(f) for name, f in reference.items()}, _twice(kps),
                          _twice(audio), _twice(style), keep.to(latents.device), style_scale)
    uncond, cond = prediction.float().chunk(2)
    return uncond + guidance * (cond - uncond)


class TalkingHeadPipeline(DiffusionPipeline):
    # the stage checks sample without these; a saved generator has them (style presets since
    # the demo, the fast sampler since issue #22: an older generator loads without them)
    _optional_components: ClassVar[list[str]] = ["style_extractor", "input_settings",
                                                 "style_presets"]

    def __init__(self, vae: AutoencoderKL, denoiser: Denoiser,
                 scheduler: EulerDiscreteScheduler, style_extractor: StyleExtractor | None = None,
                 input_settings: InputSettings | None = None,
                 style_presets: StylePresets | None = None, resolution: int = 64,
                 steps: int = 25, guidance: float = 2.0, window: int = 16, overlap: int = 4,
                 parts: dict | None = None, fast: dict | None = None):
        super().__init__()
        limit = denoiser.max_frames
        if limit is not None and window > limit:
            raise SvpError(f"window {window} exceeds the motion module's limit of {limit} frames")
        if not 0 <= overlap < window:
            raise SvpError(f"overlap must lie in [0, window), got {overlap}")
        Sampling(steps, guidance)
        if fast is not None:
            Sampling(**fast)
        self.register_modules(vae=vae.eval(), denoiser=denoiser.eval(), scheduler=scheduler,
                              style_extractor=style_extractor and style_extractor.eval(),
                              input_settings=input_settings, style_presets=style_presets)
        self.register_to_config(resolution=resolution, steps=steps, guidance=guidance,
                                window=window, overlap=overlap, parts=parts or {}, fast=fast)
        self.source = None  # where it was loaded from (`assemble.load_generator`)
        self.bf16 = False  # denoiser and VAE decoder under bf16 autocast (`precision.use_bf16`)

    @property
    def device(self) -> torch.device:
        """The denoiser's device, from its first parameter (diffusers' `ModelMixin.device` also
        walks every module for offload hooks: 4 ms a call, 10 s of an evaluation)."""
        return next(self.denoiser.parameters()).device

    def sampling(self, quality: str = "paper", steps: int | None = None,
                 guidance: float | None = None) -> Sampling:
        """The saved sampler `quality`, with a caller's explicit overrides (None: the saved
        value)."""
        if quality not in QUALITIES:
            raise SvpError(f"quality must be one of {', '.join(QUALITIES)}, got {quality!r}")
        if quality == "paper":
            saved = Sampling(self.config.steps, float(self.config.guidance))
        elif self.config.get("fast") is None:
            raise SvpError("this generator has no fast sampler (it was assembled before there "
                           "was one): run `svp assemble` again, or use the paper sampler")
        else:
            saved = Sampling(**self.config.fast)
        overrides = {name: value for name, value in (("steps", steps), ("guidance", guidance))
                     if value is not None}
        return replace(saved, **overrides) if overrides else saved

    @property
    def qualities(self) -> tuple[str, ...]:
        """The samplers this generator has, the fastest last."""
        return QUALITIES if self.config.get("fast") is not None else ("paper",)

    @torch.no_grad()
    def __call__(self, inputs: GenerationInputs, *, seed: int = 0,
                 sampling: Sampling | None = None, style_scale: float = 1.0,
                 window_batch: int = 4, decode_batch: int = 16,
                 on_step: Callable[[int, int], None] | None = None) -> Iterator[np.ndarray]:
        """One video's frames (R, R, 3) uint8, in order, decoded as they are needed;
        `on_step(step, steps)` after each denoising step. `sampling`: the paper sampler unless
        given (`self.sampling(...)`)."""
        latents = self.denoise([inputs], sampling or self.sampling(), seed, style_scale,
                               window_batch, on_step)
        yield from self.decode_frames(latents[0], decode_batch)

    @torch.no_grad()
    def generate_batch(self, videos: list[GenerationInputs], *, seed: int = 0,
                       sampling: Sampling | None = None, style_scale: float = 1.0,
                       window_batch: int = 4, noise: list[int] | None = None) -> np.ndarray:
        """(B, T, R, R, 3) uint8 for videos of one length (the stage checks' and `evaluate`'s
        batches). `noise`: each video's index in the seed's latent stream (default 0..B-1);
        a video with index 0 is what `__call__` makes of it alone."""
        latents = self.denoise(videos, sampling or self.sampling(), seed, style_scale,
                               window_batch, noise=noise)
        return np.stack([np.stack(list(self.decode_frames(v))) for v in latents])

    @torch.no_grad()
    def denoise(self, videos: list[GenerationInputs], sampling: Sampling, seed: int,
                style_scale: float = 1.0, window_batch: int = 4,
                on_step: Callable[[int, int], None] | None = None,
                noise: list[int] | None = None) -> Tensor:
        """Final latents (B, C, T, h, w): the project's one denoising loop. `noise`: each
        video's index in the seed's latent stream (default 0..B-1)."""
        n, device = len(videos[0].kps), self.device
        if any(len(v.kps) != n for v in videos):
            raise SvpError("the videos of one batch must have the same number of frames")
        noise = list(range(len(videos))) if noise is None else noise
        if len(noise) != len(videos):
            raise SvpError(f"{len(videos)} videos but {len(noise)} noise indices")
        window = min(self.config.window, n)
        starts = window_starts(n, window, self.config.overlap)
        weights = blend_weights(window, self.config.overlap if n > window else 0).to(device)

        # conditions: the ReferenceNet once per video
        reference = encode(self.vae, np.stack([v.reference for v in videos])).to(device)
        bank = self.denoiser.encode_reference(reference)
        style = None if videos[0].style is None else \
            torch.from_numpy(np.stack([v.style for v in videos])).to(device)

        # latents: one noise tensor per video, from the seed's latent stream
        scheduler = solver_scheduler(self.scheduler.config, sampling.solver)
        scheduler.set_timesteps(sampling.steps, device=device)
        shape = (1, reference.shape[1], n, *reference.shape[2:])
        latents = torch.cat([torch.randn(shape, generator=torch_generator(seed, "latents", i))
                             for i in noise]).to(device) * scheduler.init_noise_sigma

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
                with autocast(self.bf16, device):
                    out = guided_prediction(
                        self.denoiser, scheduler,
                        torch.cat([latents[:, :, s:s + window] for s in chunk]), t,
                        {name: f.repeat(k, *([1] * (f.dim() - 1))) for name, f in bank.items()},
                        kps, audio, None if style is None else style.repeat(k, 1),
                        sampling.guidance if sampling.guided(step) else 1.0, style_scale)
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
        window-major (the order `denoise` concatenates latents in). The images travel as uint8
        and become [0, 1] floats on the device: at 512² the conversion on the CPU cost a quarter
        of a fast-sampler step on a GPU (benchmarks/generation_full.md)."""
        size = self.config.resolution
        frames = [np.arange(s, s + window) for s in starts]
        kps = np.stack([kps_drawings(v.kps[f], size) for f in frames for v in videos])
        audio = None
        if videos[0].audio is not None:
            k = self.denoiser.audio_frames
            audio = torch.from_numpy(np.stack([audio_windows(v.audio, f, k)
                                               for f in frames for v in videos])).to(self.device)
        return torch.from_numpy(kps).to(self.device).float() / 255, audio

    def decode_frames(self, latents: Tensor, decode_batch: int = 16) -> Iterator[np.ndarray]:
        """(C, T, h, w) latents of one video -> frames, `decode_batch` at a time (under bf16
        autocast with the denoiser: 2-4x faster with AMX, pixels at most 2/255 apart)."""
        for first in range(0, latents.shape[1], decode_batch):
            with autocast(self.bf16, self.device):
                frames = decode(self.vae,
                                latents[:, first:first + decode_batch].permute(1, 0, 2, 3))
            yield from frames


def new_pipeline(vae: AutoencoderKL, denoiser: Denoiser, diffusion: DiffusionConfig,
                 style_extractor: StyleExtractor | None = None,
                 input_settings: InputSettings | None = None,
                 parts: dict | None = None,
                 style_presets: StylePresets | None = None) -> TalkingHeadPipeline:
    """A generator of these parts that samples as `diffusion` says (the stage checks' and
    `assemble`'s)."""
    s = diffusion.sampling
    return TalkingHeadPipeline(vae, denoiser, sampling_scheduler(diffusion.noise),
                               style_extractor, input_settings, style_presets,
                               diffusion.resolution,
                               steps=s.steps,
                               guidance=s.guidance, window=s.window, overlap=s.overlap,
                               parts=parts, fast=asdict(s.fast))
