"""`svp generate`'s samplers side by side: speed, quality, and memory by speech length.

    .venv/bin/python benchmarks/generation.py [--model data/generator] [--seconds 5]
        [--lengths 5 20 60] [--cases 6] [--out benchmarks/generation.md]

1. Speed: the generator's paper sampler and each fast variant on the same inputs (a held-out
   speaker's first frame and `--seconds` of that speaker's speech), in one process, through the
   pipeline `svp generate` runs: seconds per video-second and the speed-up over the paper's.
2. Memory: the generator's fast sampler on each of `--lengths` seconds of speech, each in a fresh
   process, so its peak resident memory (ru_maxrss) is its own.
   Where the CPU has bf16 units, the paper and fast samplers again under bf16 autocast.
3. Quality: each sampler's full-model row on evaluate's cases (`--cases` per protocol; params'
   `evaluate` otherwise), measured as `svp evaluate` measures, and how much worse than the paper
   sampler each compared metric is, relative, with its standard error over the cases.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from table import cpu_name, emit

from components.config import load_params
from components.evaluation.rows import Variant
from components.evaluation.stage import FAST_COMPARED, sampler_quality
from components.generation.assemble import load_generator
from components.generation.generate import Request, prepare_inputs
from components.generation.pipeline import Sampling, TalkingHeadPipeline
from components.media import decode_audio, decode_video
from components.precision import bf16_units, use_bf16
from components.synth.speech import write_wav

# fast variants beside the generator's own: the solvers at 4 and 5 steps guided on every step,
# and no guidance at all
VARIANTS = {
    "dpm++ 5": Sampling(5, 2.0, "dpmsolver++"),
    "dpm++ 4": Sampling(4, 2.0, "dpmsolver++"),
    "unipc 4": Sampling(4, 2.0, "unipc"),
    "dpm++ 6, unguided": Sampling(6, 1.0, "dpmsolver++"),
}


def samplers(pipeline: TalkingHeadPipeline) -> dict[str, Variant]:
    """The paper sampler first, the generator's fast one, the variants it is not, all in fp32;
    then, where this CPU has bf16 units, the paper and fast samplers under bf16 autocast."""
    paper, fast = pipeline.sampling("paper"), pipeline.sampling("fast")
    fp32 = {"paper": Variant(paper), "fast (the generator's)": Variant(fast)} | {
        name: Variant(s) for name, s in VARIANTS.items() if s not in (paper, fast)}
    units = bf16_units(pipeline.device)
    bf16 = {f"paper, bf16 ({units})": Variant(paper, True),
            f"fast, bf16 ({units})": Variant(fast, True)} if units else {}
    return fp32 | bf16


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


def timed(pipeline: TalkingHeadPipeline, inputs, variant: Variant) -> tuple[int, float]:
    settings = load_params().generate
    pipeline.bf16 = variant.bf16
    start = time.perf_counter()
    n = sum(1 for _ in pipeline(inputs, seed=0, sampling=variant.sampling,
                                window_batch=settings.window_batch,
                                decode_batch=settings.decode_batch))
    return n, time.perf_counter() - start


def speeds(model: str, seconds: float) -> list[dict]:
    """Every sampler on the same `seconds` of speech: seconds per video-second."""
    pipeline = load_generator(model)
    fps = pipeline.input_settings.config.fps
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = held_out_media(Path(tmp), seconds)
        inputs = prepare_inputs(pipeline, Request(image, audio, str(Path(tmp) / "out.mp4")),
                                load_params().generate)
        rows = []
        for name, variant in samplers(pipeline).items():
            n, wall = timed(pipeline, inputs, variant)
            rows.append({"name": name, "sampling": variant.sampling.describe(),
                         "passes": variant.sampling.passes, "s_per_video_s": wall / (n / fps)})
            print(f"{name}: {wall:.1f} s for {n} frames", file=sys.stderr, flush=True)
    return rows


def one_length(model: str, seconds: float) -> dict:
    """The fast sampler's throughput and this process's peak memory for `seconds` of speech,
    in the precision `svp generate` chooses (`generate.bf16`)."""
    pipeline = load_generator(model)
    settings = load_params().generate
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = held_out_media(Path(tmp), seconds)
        inputs = prepare_inputs(pipeline, Request(image, audio, str(Path(tmp) / "out.mp4")),
                                settings)
        bf16 = use_bf16(settings.bf16, pipeline.device, "generate")
        n, wall = timed(pipeline, inputs, Variant(pipeline.sampling("fast"), bf16))
    return {"seconds": seconds, "frames": n, "wall_s": wall, "fps": n / wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def _percent(value: float | None, se: float | None) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    spread = "" if se is None or not np.isfinite(se) else f" ± {100 * se:.1f}"
    return f"{100 * value:+.1f}{spread}"


def quality_lines(model: str, cases: int, names: dict[str, Variant]) -> list[str]:
    cfg = replace(load_params().evaluate, generator=model, reconstruction_clips=cases,
                  style_transfer_clips=cases)
    measured = sampler_quality(cfg, names)
    metrics = list(FAST_COMPARED)
    lines = []
    for protocol, rows in measured["metrics"].items():
        lines += ["", f"Quality, {protocol.replace('_', ' ')} ({cases} cases of {cfg.frames} "
                  "frames): each metric, then % worse than the paper sampler ± s.e.", "",
                  "| sampler | " + " | ".join(metrics) + " |",
                  "|---|" + "---|" * len(metrics)]
        for name in names:
            against = measured["against_first"][name][protocol]
            lines.append(f"| {name} | " + " | ".join(
                f"{rows[name][m]:.3f} ({_percent(against[m]['worse'], against[m]['se'])})"
                for m in metrics) + " |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/generator")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lengths", type=float, nargs="*", default=[5.0, 20.0, 60.0])
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    if args.one is not None:
        print(json.dumps(one_length(args.model, args.one)))
        return
    speed = speeds(args.model, args.seconds)
    paper = speed[0]["s_per_video_s"]
    pipeline = load_generator(args.model)
    config = pipeline.config
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; the generator {args.model}, windows of {config.window} frames "
        f"overlapping by {config.overlap}, {args.seconds:g} s of a held-out speaker's speech.",
        "", "| sampler | settings | denoiser passes a window | s per video-second | speed-up |",
        "|---|---|---|---|---|",
        *(f"| {r['name']} | {r['sampling']} | {r['passes']} | {r['s_per_video_s']:.1f} | "
          f"{paper / r['s_per_video_s']:.2f}x |" for r in speed)]
    rows = []
    for seconds in args.lengths:
        run = subprocess.run([sys.executable, __file__, "--model", args.model, "--one",
                              str(seconds)], capture_output=True, text=True, check=True)
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    bf16 = use_bf16(load_params().generate.bf16, pipeline.device, "generate")
    lines += ["", f"The fast sampler ({pipeline.sampling('fast').describe()}"
              f"{', bf16' if bf16 else ''}, as `svp generate` runs it) by speech length, "
              "each in a fresh process:", "",
              "| speech | frames | seconds | frames/s | peak memory (RSS) |",
              "|---|---|---|---|---|",
              *(f"| {r['seconds']:g} s | {r['frames']} | {r['wall_s']:.1f} | {r['fps']:.2f} | "
                f"{r['peak_rss_mb']:.0f} MiB |" for r in rows)]
    if len(rows) > 1:
        lines += ["", f"Peak memory, longest over shortest: "
                  f"{rows[-1]['peak_rss_mb'] / rows[0]['peak_rss_mb']:.2f}x."]
    lines += quality_lines(args.model, args.cases, samplers(pipeline))  # last: not timed
    emit(lines, args.out)


if __name__ == "__main__":
    main()
