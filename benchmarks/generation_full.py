"""The full profile's generator on a GPU: frames/s and peak memory of the paper and fast samplers.

    python benchmarks/generation_full.py [--device cuda] [--profile profiles/full.args]
        [--seconds 2] [--lengths 2 8 20] [--out benchmarks/generation_full.md]

The generator is built from params with the profile applied (512², SD1.5's UNet for the denoiser
and the ReferenceNet, SD's VAE, AnimateDiff-sized motion modules, audio and style attention) with
random weights: speed and memory depend on the shapes, not on the weights, and no pretrained
weights exist where this runs. The inputs are made here too (a 512² portrait, Head-Kps moving a
little, random Whisper states, a random style), `--seconds` of them for the speed table.

1. Speed: the generator's paper sampler and its fast one, in fp32 (torch's defaults: TF32
   convolutions, fp32 matmuls) and under bf16 autocast, through the pipeline `svp generate`
   runs (denoising and the VAE decoding every frame): seconds per video-second, frames/s, and
   the peak GPU memory of each.
2. What the conditions cost: drawing the Head-Kps images and slicing the audio windows of one
   denoising step (on the CPU, then copied), against the fast sampler's seconds a step; and the
   fast sampler again with each window's conditions made once per video instead of once a step
   (a measurement only: `svp generate` draws them per step, so memory stays flat in the length).
3. Memory: the fast sampler as `svp generate` runs it (`generate.bf16`) on each of `--lengths`
   seconds: peak GPU memory (on a CPU: the process's peak RSS so far).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from table import cpu_name, emit

from components.config import Params, load_params
from components.diffusion.models.build import add_motion_modules, new_denoiser
from components.diffusion.models.vae import new_vae
from components.face_template import TEMPLATE_2D
from components.features.audio import N_HIDDEN, WIDTH
from components.features.head_kps import head_kps
from components.generation.pipeline import (
    GenerationInputs,
    Sampling,
    TalkingHeadPipeline,
    new_pipeline,
    window_starts,
)
from components.precision import bf16_units, use_bf16

FPS = 25.0


def random_generator(params: Params, device: torch.device) -> TalkingHeadPipeline:
    """The profile's generator, random weights, built on `device` (no pretrained parts)."""
    d = params.diffusion
    d = replace(d, vae=replace(d.vae, pretrained=None), unet=replace(d.unet, pretrained=None),
                motion=replace(d.motion, pretrained=None))
    with device:
        denoiser = new_denoiser(d, FPS)
        add_motion_modules(denoiser, d)
        return new_pipeline(new_vae(d), denoiser, d)


def made_inputs(pipeline: TalkingHeadPipeline, seconds: float, style_dim: int) -> GenerationInputs:
    """`seconds` of made-up inputs at the generator's resolution."""
    size, n = pipeline.config.resolution, round(seconds * FPS)
    rng = np.random.default_rng(0)
    ramp = np.linspace(60, 200, size, dtype=np.float32)
    portrait = np.stack(np.broadcast_arrays(ramp[:, None], ramp[None, :], np.float32(150)), -1)
    portrait = np.clip(portrait + rng.normal(0, 8, portrait.shape), 0, 255).astype(np.uint8)
    landmarks = TEMPLATE_2D * 0.45 * size + np.array([0.5, 0.55]) * size
    sway = 0.02 * size * np.sin(np.arange(n) / FPS * 2 * np.pi * 0.5)
    kps = head_kps(landmarks)[None] + np.stack([sway, 0.5 * sway], -1)[:, None]
    audio = rng.normal(0, 1, (n, N_HIDDEN, 2, WIDTH)).astype(np.float16)
    style = rng.normal(0, 1, style_dim).astype(np.float32)
    return GenerationInputs(portrait, kps.astype(np.float32), audio, style)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated since the last reset, or this process's peak RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(pipeline: TalkingHeadPipeline, inputs: GenerationInputs, sampling: Sampling,
          bf16: bool, params: Params) -> dict:
    pipeline.bf16 = bf16
    device = pipeline.device
    _sync(device)
    _reset_peak(device)
    start = time.perf_counter()
    n = sum(1 for _ in pipeline(inputs, seed=0, sampling=sampling,
                                window_batch=params.generate.window_batch,
                                decode_batch=params.generate.decode_batch))
    _sync(device)
    wall = time.perf_counter() - start
    return {"frames": n, "wall_s": wall, "s_per_video_s": wall / (n / FPS), "fps": n / wall,
            "peak_mib": peak_memory_mib(device)}


def conditions_per_step(pipeline: TalkingHeadPipeline, inputs: GenerationInputs,
                        params: Params, repeats: int = 3) -> float:
    """Seconds to make one denoising step's Head-Kps images and audio windows (every window)."""
    window = min(pipeline.config.window, len(inputs.kps))
    starts = window_starts(len(inputs.kps), window, pipeline.config.overlap)
    batch = params.generate.window_batch
    _sync(pipeline.device)
    start = time.perf_counter()
    for _ in range(repeats):
        for first in range(0, len(starts), batch):
            pipeline._window_conditions([inputs], starts[first:first + batch], window)
    _sync(pipeline.device)
    return (time.perf_counter() - start) / repeats


@contextmanager
def conditions_made_once(pipeline: TalkingHeadPipeline) -> Iterator[None]:
    """`pipeline` keeps each window's Head-Kps images and audio windows after the first step."""
    made, draw = {}, pipeline._window_conditions

    def kept(videos, starts, window):
        key = (tuple(starts), window)
        if key not in made:
            made[key] = draw(videos, starts, window)
        return made[key]

    pipeline._window_conditions = kept
    try:
        yield
    finally:
        del pipeline._window_conditions


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"{cpu_name()} (CPU)"


def _millions(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--profile", default="profiles/full.args",
                        help="a params profile (key=value lines); '' for params.yaml alone")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--lengths", type=float, nargs="*", default=[2.0, 8.0, 20.0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    device = torch.device(args.device)
    params = load_params("params.yaml", args.profile or None)
    start = time.perf_counter()
    pipeline = random_generator(params, device)
    built = time.perf_counter() - start
    style_dim = params.diffusion.style.style_dim
    inputs = made_inputs(pipeline, args.seconds, style_dim)
    paper, fast = pipeline.sampling("paper"), pipeline.sampling("fast")
    units = bf16_units(device)
    variants = [("paper", paper, False), ("fast", fast, False)] + (
        [("paper", paper, True), ("fast", fast, True)] if units else [])
    for bf16 in sorted({b for *_, b in variants}):  # warm-up: kernels, allocator, lazy inits,
        for sampling in (paper, fast):  # each batch shape (guided and not)
            timed(pipeline, inputs, replace(sampling, steps=2), bf16, params)

    rows = []
    for name, sampling, bf16 in variants:
        rows.append({"name": name, "sampling": sampling, "bf16": bf16}
                    | timed(pipeline, inputs, sampling, bf16, params))
        r = rows[-1]
        print(f"{name}{', bf16' if bf16 else ''}: {r['wall_s']:.1f} s for {r['frames']} frames, "
              f"peak {r['peak_mib']:.0f} MiB", file=sys.stderr, flush=True)
    conditions = conditions_per_step(pipeline, inputs, params)
    with conditions_made_once(pipeline):
        once = timed(pipeline, inputs, fast, rows[-1]["bf16"], params)
    chosen = use_bf16(params.generate.bf16, device, "generate")
    lengths = []
    for seconds in args.lengths:
        run = timed(pipeline, made_inputs(pipeline, seconds, style_dim), fast, chosen, params)
        lengths.append({"seconds": seconds} | run)
        print(f"fast on {seconds:g} s: {run['wall_s']:.1f} s, peak {run['peak_mib']:.0f} MiB",
              file=sys.stderr, flush=True)

    d, reference = params.diffusion, rows[0]["s_per_video_s"]
    memory = "peak GPU memory allocated" if device.type == "cuda" else "peak RSS so far"
    lines = [
        f"Device: {_device_name(device)}, torch {torch.__version__}; profile "
        f"`{args.profile or 'params.yaml'}` with random weights: {d.resolution}² frames, denoiser "
        f"{_millions(pipeline.denoiser):.0f} M parameters (UNet, ReferenceNet, motion modules, "
        f"Head-Kps guider, audio and style projections), VAE {_millions(pipeline.vae):.0f} M; "
        f"built in {built:.0f} s. Windows of {pipeline.config.window} frames overlapping by "
        f"{pipeline.config.overlap}, {params.generate.window_batch} windows a denoiser batch, "
        f"{args.seconds:g} s of made-up inputs at {FPS:g} frames/s.",
        "", f"| sampler | settings | precision | s per video-second | frames/s | speed-up | "
        f"{memory} |", "|---|---|---|---|---|---|---|",
        *(f"| {r['name']} | {r['sampling'].describe()} | {'bf16 autocast' if r['bf16'] else 'fp32'}"
          f" | {r['s_per_video_s']:.2f} | {r['fps']:.2f} | {reference / r['s_per_video_s']:.2f}x"
          f" | {r['peak_mib']:.0f} MiB |" for r in rows)]
    step = next(r for r in reversed(rows) if r["name"] == "fast")
    step_s = step["wall_s"] / fast.steps
    gain = step["s_per_video_s"] / once["s_per_video_s"]
    lines += ["", f"Head-Kps images and audio windows of one denoising step (all windows of "
              f"{args.seconds:g} s): {conditions:.3f} s, against {step_s:.3f} s a step of the "
              f"fast sampler{' under bf16' if step['bf16'] else ''} (decoding included): "
              f"{100 * conditions / step_s:.0f}%. The same sampler with each window's "
              f"conditions made once per video: {once['s_per_video_s']:.2f} s per video-second "
              f"against {step['s_per_video_s']:.2f} ({gain:.2f}x)."]
    lines += ["", f"The fast sampler by speech length ({'bf16 autocast' if chosen else 'fp32'}, "
              f"as `svp generate` runs it here):", "",
              f"| speech | frames | seconds | frames/s | {memory} |", "|---|---|---|---|---|",
              *(f"| {r['seconds']:g} s | {r['frames']} | {r['wall_s']:.1f} | {r['fps']:.2f} | "
                f"{r['peak_mib']:.0f} MiB |" for r in lengths)]
    if len(lengths) > 1:
        lines += ["", f"Peak memory, longest over shortest: "
                  f"{lengths[-1]['peak_mib'] / lengths[0]['peak_mib']:.2f}x."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
