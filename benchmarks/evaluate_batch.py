"""`svp evaluate`'s generation, cases one by one against cases batched (`evaluate.case_batch`).

    .venv/bin/python benchmarks/evaluate_batch.py [--batches 1 4 8 14]
        [--out benchmarks/evaluate_batch.md]

On params' `evaluate` cases (style transfer: the protocol with the most cases), in one process,
in the precision `svp evaluate` chooses: each sampler's seconds per case at each batch size, and
how far a batched case's frames are from the same case generated alone (a batch changes only
the order of floating-point sums, so the frames should differ by a few levels at most).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from table import cpu_name, emit

from components.config import load_params
from components.evaluation.rows import batched, full_inputs
from components.evaluation.stage import evaluation_setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 14])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    cfg = load_params().evaluate
    setup = evaluation_setup(cfg)
    cases = setup.cases["style_transfer"]
    inputs = [full_inputs(setup.clips, c, cfg.frames, setup.style(c), cfg.seed) for c in cases]
    lines = [f"Machine: {cpu_name()}; {len(cases)} style-transfer cases of {cfg.frames} frames; "
             f"bf16 autocast {'on' if setup.pipeline.bf16 else 'off'}.", "",
             "| sampler | cases a loop | seconds a case | speed-up | max level difference "
             "from alone | mean level difference |", "|---|---|---|---|---|---|"]
    for quality in setup.pipeline.qualities[::-1]:
        sampling = setup.pipeline.sampling(quality)
        alone, first = None, None
        for batch in args.batches:
            started = time.perf_counter()
            frames = np.stack(batched(setup.pipeline, inputs, sampling, cfg.seed, batch))
            per_case = (time.perf_counter() - started) / len(cases)
            if alone is None:
                alone, first = frames.astype(int), per_case
            difference = np.abs(frames.astype(int) - alone)
            lines.append(f"| {quality} ({sampling.passes} passes) | {batch} | {per_case:.2f} | "
                         f"{first / per_case:.2f}x | {difference.max()} | "
                         f"{difference.mean():.3f} |")
            print(lines[-1], file=sys.stderr, flush=True)
    emit(lines, args.out)


if __name__ == "__main__":
    main()
