"""Does `--style-mix` move the expression between two styles? Landmark distances on the trained
embedded generator.

    .venv/bin/python benchmarks/style_mix.py [--weights 0 0.25 0.5 0.75 1] [--frames 16]
                                             [--out benchmarks/style_mix.md]

For each held-out identity and each pair of its level-3 emotions below: the first frame of its
neutral clip is the reference, the neutral clip's Head-Kps and speech drive the video (so only the
style brings an expression), and the two emotional clips' priors are mixed at each weight, every
video from the same seed. Landmarks are found by the project's detector on the generated pixels;
per weight w the table gives the mean landmark distance (F-LMD's) of its frames to those of
weight 0 and of weight 1, and the position of its landmarks along the line from weight 0's to
weight 1's (0 at the first style, 1 at the second; a least-squares projection per frame).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np
import torch
from table import emit

from components.config import load_params
from components.diffusion.frames import load_clips
from components.diffusion.style_prior import style_priors
from components.evaluation.metrics import FaceLandmarks, f_lmd
from components.generation.assemble import load_generator
from components.generation.pipeline import GenerationInputs
from components.generation.style import Style, mix

PAIRS = (("happy", "sad"), ("angry", "surprised"))


def position(landmarks: np.ndarray, first: np.ndarray, second: np.ndarray) -> float:
    """Mean over frames of where `landmarks` lie on the line first -> second (least squares)."""
    line = (second - first).reshape(len(first), -1)
    offset = (landmarks - first).reshape(len(first), -1)
    ok = np.isfinite(line).all(1) & np.isfinite(offset).all(1)
    return float(np.mean((offset[ok] * line[ok]).sum(1) / (line[ok] ** 2).sum(1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=float, nargs="+", default=[0, 0.25, 0.5, 0.75, 1])
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", default="data/generator")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    params = load_params()
    pipeline = load_generator(args.model)
    features_dir = params.evaluate.features_dir
    clips = load_clips(params.evaluate.latents_dir, features_dir, "test")
    priors = style_priors(pipeline.style_extractor, features_dir, [c.sample_id for c in clips],
                          pipeline.denoiser.config.style_config["style_dim"])
    detect = FaceLandmarks(pipeline.input_settings.config.dlib_predictor)

    def style_of(identity: str, emotion: str) -> Style:
        i = next(k for k, c in enumerate(clips) if c.identity == identity
                 and c.emotion == emotion and "level_3" in c.sample_id)
        return Style.from_prior(priors[i, 0], priors[i, 1], clips[i].sample_id)

    rows, monotonic = [], []
    for identity in sorted({c.identity for c in clips}):
        neutral = next(c for c in clips if c.identity == identity and c.emotion == "neutral")
        idx = np.arange(min(args.frames, len(neutral)))
        for first, second in PAIRS:
            a, b = style_of(identity, first), style_of(identity, second)
            found = {}
            for w in args.weights:
                inputs = GenerationInputs(neutral.frames(0)[0], neutral.kps[idx],
                                          neutral.audio[idx], mix(a, b, w).draw(args.seed))
                frames = np.stack(list(pipeline(inputs, seed=args.seed)))
                found[w] = detect(frames)
            lo, hi = found[min(args.weights)], found[max(args.weights)]
            dist = {w: (float(np.nanmean(f_lmd(lm, lo))), float(np.nanmean(f_lmd(lm, hi))),
                        position(lm, lo, hi)) for w, lm in found.items()}
            along = [dist[w][2] for w in sorted(args.weights)]
            monotonic.append(bool(np.all(np.diff(along) > 0)))
            for w in sorted(args.weights):
                rows.append(f"| {identity} | {first} -> {second} | {w:g} | {dist[w][0]:.2f} | "
                            f"{dist[w][1]:.2f} | {dist[w][2]:.2f} |")
            print(rows[-len(args.weights):], flush=True)
    c = pipeline.config
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores; the generator "
             f"{args.model}, {c.steps} steps, guidance {c.guidance}, "
             f"{args.frames} frames, seed {args.seed}.", "",
             "| identity | styles | mix | F-LMD to mix 0 | F-LMD to mix 1 | position 0 -> 1 |",
             "|---|---|---|---|---|---|", *rows, "",
             f"Position strictly increasing with the mix in {sum(monotonic)} of "
             f"{len(monotonic)} pairs."]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
