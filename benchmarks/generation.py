"""`svp generate`'s speed and memory by speech length.

    .venv/bin/python benchmarks/generation.py [--model data/generator] [--lengths 5 20 60]
                                              [--steps 25] [--out benchmarks/generation.md]

Runs a saved generator (by default the folder `svp assemble` wrote) on a held-out speaker's first
frame and that speaker's speech, repeated to each length, through the pipeline `svp generate`
runs (its one denoising loop). Each length runs in a fresh process, so its peak resident memory
(ru_maxrss) is its own.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from table import emit

from components.config import load_params
from components.generation.assemble import load_generator
from components.generation.generate import Request, prepare_inputs
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


def one_length(model: str, seconds: float, steps: int) -> dict:
    """Pipeline throughput and this process's peak memory for `seconds` of speech."""
    torch.set_num_threads(os.cpu_count() or 1)
    pipeline = load_generator(model)
    settings = load_params().generate
    with tempfile.TemporaryDirectory() as tmp:
        image, audio = held_out_media(Path(tmp), seconds)
        inputs = prepare_inputs(pipeline, Request(image, audio, str(Path(tmp) / "out.mp4")),
                                settings)
        start = time.perf_counter()
        n = sum(1 for _ in pipeline(inputs, seed=0, steps=steps,
                                    window_batch=settings.window_batch,
                                    decode_batch=settings.decode_batch))
        wall = time.perf_counter() - start
    return {"seconds": seconds, "frames": n, "wall_s": wall, "fps": n / wall,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="data/generator")
    parser.add_argument("--lengths", type=float, nargs="*", default=[5.0, 20.0, 60.0])
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--one", type=float, help=argparse.SUPPRESS)  # a child process
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.one is not None:
        print(json.dumps(one_length(args.model, args.one, args.steps)))
        return
    rows = []
    for seconds in args.lengths:
        run = subprocess.run([sys.executable, __file__, "--model", args.model, "--one",
                              str(seconds), "--steps", str(args.steps)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(run.stdout.strip().splitlines()[-1]))
    config = load_generator(args.model).config
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
        f"{torch.__version__}; the generator {args.model}, {args.steps} Euler steps, "
        f"classifier-free guidance {config.guidance:g}, windows of {config.window} frames "
        f"overlapping by {config.overlap}.", "",
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
