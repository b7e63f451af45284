"""What channels-last memory and `torch.compile` buy the fast sampler on this machine (issue #22:
measure each means, keep what pays).

    .venv/bin/python benchmarks/sampler_means.py [--model data/generator] [--seconds 2]
        [--repeats 3] [--out benchmarks/sampler_means.md]

The generator's fast sampler on `--seconds` of made-up inputs (`generation_full.made_inputs`),
through the pipeline `svp generate` runs, in fp32 and under bf16 autocast where the device has
bf16 units, each plain, with the denoiser's weights in channels-last memory, and with the
denoiser compiled (`nn.Module.compile`, inductor). Each variant is run once to warm up (for
`torch.compile`: the compilation) and then `--repeats` times; the table gives the median, the
speed-up over plain fp32 and the largest pixel difference from plain fp32's frames.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from generation_full import made_inputs
from table import cpu_name, emit

from components.config import load_params
from components.generation.assemble import load_generator
from components.generation.pipeline import TalkingHeadPipeline
from components.precision import bf16_units

MEANS: dict[str, Callable[[TalkingHeadPipeline], object]] = {
    "plain": lambda pipeline: None,
    "channels-last": lambda pipeline: pipeline.denoiser.to(memory_format=torch.channels_last),
    "torch.compile": lambda pipeline: pipeline.denoiser.compile(),
}


def frames_and_times(pipeline: TalkingHeadPipeline, inputs, bf16: bool,
                     repeats: int) -> tuple[np.ndarray, float, list[float]]:
    settings = load_params().generate
    pipeline.bf16 = bf16

    def run() -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        frames = np.stack(list(pipeline(inputs, seed=0, sampling=pipeline.sampling("fast"),
                                        window_batch=settings.window_batch,
                                        decode_batch=settings.decode_batch)))
        return frames, time.perf_counter() - start

    frames, warm_up = run()
    return frames, warm_up, [run()[1] for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/generator")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    pipeline = load_generator(args.model)
    inputs = made_inputs(pipeline, args.seconds,
                         pipeline.denoiser.config.style_config["style_dim"])
    precisions = [False, True] if bf16_units(pipeline.device) else [False]
    rows, reference = [], None
    for bf16 in precisions:
        for name, means in MEANS.items():
            pipeline = load_generator(args.model)  # each means on a generator of its own
            means(pipeline)
            frames, warm_up, times = frames_and_times(pipeline, inputs, bf16, args.repeats)
            reference = frames if reference is None else reference
            rows.append({"name": name, "bf16": bf16, "warm_up": warm_up,
                         "s_per_video_s": float(np.median(times)) / args.seconds,
                         "diff": int(np.abs(frames.astype(int) - reference).max())})
            print(rows[-1], flush=True)
    base = rows[0]["s_per_video_s"]
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch {torch.__version__}; the "
             f"generator {args.model}'s fast sampler ({pipeline.sampling('fast').describe()}) on "
             f"{args.seconds:g} s of made-up inputs; median of {args.repeats} runs after one "
             "warm-up.", "",
             "| means | precision | warm-up s | s per video-second | speed-up | largest pixel "
             "difference from plain fp32 |", "|---|---|---|---|---|---|",
             *(f"| {r['name']} | {'bf16 autocast' if r['bf16'] else 'fp32'} | "
               f"{r['warm_up']:.1f} | {r['s_per_video_s']:.2f} | "
               f"{base / r['s_per_video_s']:.2f}x | {r['diff']} |" for r in rows)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
