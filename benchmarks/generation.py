"""`svp generate`'s pipeline against a naive loop, and its speed and memory by speech length.

    .venv/bin/python benchmarks/generation.py [--compare-s 5] [--lengths 5 20 60] [--steps 25]
                                              [--out benchmarks/generation.md]

Runs the embedded generator `dvc repro` trained (params.yaml's `generate` parts) on a held-out
speaker's first frame and that speaker's speech, repeated to each length.

- The naive loop computes the same video the obvious way: per timestep and per window, the
  ReferenceNet is run again and the window's latents are stepped by a scheduler of the window's
  own, windows one at a time; the stepped windows are then blended with the pipeline's weights.
  (Euler's step is linear in latents and prediction, so blending stepped windows equals
  stepping blended predictions: the two outputs must agree up to rounding.)
- Each length runs in a fresh process, so its peak resident memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from table import emit

from components.config import load_params
from components.diffusion.sampler import guided_prediction
from components.diffusion.schedule import sampling_scheduler
from components.diffusion.vae import decode, encode
from components.generation.generate import Request, prepare_inputs
from components.generation.models import load_generator
from components.generation.pipeline import TalkingHeadPipeline, blend_weights, window_starts
from components.media import decode_audio, decode_video
from components.synth.speech import write_wav


def held_out_media(folder: Path, seconds: float) -> tuple[str, str]:
    """A test-split speaker's first frame (png) and its speech repeated to `seconds` (wav)."""
    import cv2
    import pyarrow.parquet as pq

    manifest = pq.read_table("data/validated/manifest.parquet").to_pandas()
    clip = manifest[manifest["split"] == "test"].sort_values("sample_id").iloc[0]
    frames, _ = decode_video(Path(clip["video_path"]))
    image = folder / "portrait.png"
    cv2.imwrite(str(image), frames[0][..., ::-1])
    speech, rate = decode_audio(Path(clip["audio_path"]), 16000)
    audio = folder / f"speech_{seconds:g}s.wav"
    write_wav(audio, np.resize(speech, int(seconds * rate)), rate)
    return str(image), str(audio)


@torch.no_grad()
def naive(pipeline: TalkingHeadPipeline, inputs, steps: int, guidance: float,
          seed: int) -> np.ndarray:
    d, n = pipeline.diffusion, len(inputs.kps)
    window = min(pipeline.window, n)
    starts = window_starts(n, window, pipeline.overlap)
    weights = blend_weights(window, pipeline.overlap if n > window else 0)
    reference = encode(pipeline.vae, inputs.reference[None])
    style = None if inputs.style is None else torch.from_numpy(inputs.style)[None]
    template = sampling_scheduler(d.noise)
    template.set_timesteps(steps)
    schedulers = [copy.deepcopy(template) for _ in starts]
    latents = torch.randn((1, reference.shape[1], n, *reference.shape[2:]),
                          generator=torch.Generator().manual_seed(seed)) * \
        template.init_noise_sigma
    for t in template.timesteps:
        stepped, weight_sum = torch.zeros_like(latents), torch.zeros(n)
        for s, scheduler in zip(starts, schedulers, strict=True):
            bank = pipeline.denoiser.encode_reference(reference)  # again, every window and step
            c = pipeline._conditions(inputs, [np.arange(s, s + window)], bank, style, guidance,
                                     1.0)
            part = latents[:, :, s:s + window]
            prediction = guided_prediction(pipeline.denoiser, scheduler, part, t, c)
            stepped[0, :, s:s + window] += scheduler.step(prediction, t, part).prev_sample[0] \
                * weights[:, None, None]
            weight_sum[s:s + window] += weights
        latents = stepped / weight_sum[:, None, None]
    return decode(pipeline.vae, latents[0].permute(1, 0, 2, 3))


def setup(seconds: float, folder: Path):
    params = load_params()
    params = replace(params, generate=replace(params.generate, model=None))  # the pipeline's
    gen = load_generator(params.generate, params.diffusion)  # own parts, not the champion
    image, audio = held_out_media(folder, seconds)
    inputs = prepare_inputs(params, gen, Request(image, audio, str(folder / "out.mp4")))
    g = params.generate
    return params, TalkingHeadPipeline(gen.vae, gen.denoiser, gen.diffusion, g.window,
                                       g.overlap, g.window_batch, g.decode_batch), inputs


def one_length(seconds: float, steps: int) -> dict:
    """Pipeline throughput and this process's peak memory for `seconds` of speech."""
    torch.set_num_threads(os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as tmp:
        params, pipeline, inputs = setup(seconds, Path(tmp))
        start = time.perf_counter()
        n = sum(1 for _ in pipeline(inputs, steps=steps,
                                    guidance=params.diffusion.sampling.guidance, seed=0))
        wall = time.perf_counter() - start
    return {"seconds": seconds, "frames": n, "wall_s": wall, "fps": n / wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def compare(seconds: float, steps: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        params, pipeline, inputs = setup(seconds, Path(tmp))
        guidance = params.diffusion.sampling.guidance
        start = time.perf_counter()
        ours = np.stack(list(pipeline(inputs, steps=steps, guidance=guidance, seed=0)))
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        theirs = naive(pipeline, inputs, steps, guidance, seed=0)
        naive_s = time.perf_counter() - start
    diff = np.abs(ours.astype(np.int16) - theirs.astype(np.int16))
    return {"frames": len(ours), "pipeline_s": ours_s, "naive_s": naive_s,
            "max_diff": int(diff.max()), "mean_diff": float(diff.mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare-s", type=float, default=5.0)
    parser.add_argument("--lengths", type=float, nargs="*", default=[5.0, 20.0, 60.0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_length(args.one, args.steps)))
        return
    c = compare(args.compare_s, args.steps)
    rows = []
    for seconds in args.lengths:
        run = subprocess.run([sys.executable, __file__, "--one", str(seconds), "--steps",
                              str(args.steps)], capture_output=True, text=True, check=True)
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    g = load_params().generate
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; the embedded generator, {args.steps} Euler steps, classifier-free "
        f"guidance, windows of {g.window} frames overlapping by {g.overlap}, "
        f"{g.window_batch} windows per call.", "",
        f"Pipeline vs naive loop, {args.compare_s:g} s of speech ({c['frames']} frames):", "",
        "| loop | seconds | frames/s |", "|---|---|---|",
        f"| pipeline | {c['pipeline_s']:.1f} | {c['frames'] / c['pipeline_s']:.2f} |",
        f"| naive (ReferenceNet every window and step, scheduler per window) | "
        f"{c['naive_s']:.1f} | {c['frames'] / c['naive_s']:.2f} |", "",
        f"Speed ratio {c['naive_s'] / c['pipeline_s']:.2f}x; outputs agree to "
        f"{c['max_diff']} grey levels at most (mean {c['mean_diff']:.3f}).", "",
        "By speech length (each in a fresh process):", "",
        "| speech | frames | seconds | frames/s | peak memory (RSS) |", "|---|---|---|---|---|",
        *(f"| {r['seconds']:g} s | {r['frames']} | {r['wall_s']:.1f} | {r['fps']:.2f} | "
          f"{r['peak_rss_mb']:.0f} MiB |" for r in rows)]
    if len(rows) > 1:
        lines += ["", f"Peak memory, longest over shortest: "
                  f"{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
