"""Benchmark of the procedural dataset: generation throughput per part, and how real its faces
look to a real landmark detector (dlib HOG + 68-point predictor).

    .venv/bin/python benchmarks/synth_faces.py [--identities 8] [--stride 5] [--out FILE]

Prints a Markdown table; `--out` also writes it (benchmarks/synth_faces.md is the committed one).
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import dlib
import numpy as np
from table import emit

from components.config import MEAD_EMOTIONS, SynthConfig
from components.synth.generate import (
    ClipSpec,
    animate,
    encode_mp4,
    make_identity,
    render_clip,
)
from components.synth.speech import write_wav

PREDICTOR = "/usr/share/dlib/shape_predictor_68_face_landmarks.dat"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--identities", type=int, default=8)
    parser.add_argument("--stride", type=int, default=5, help="check every Nth frame")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    cfg = SynthConfig(n_identities=args.identities)
    detector, predictor = dlib.get_frontal_face_detector(), dlib.shape_predictor(PREDICTOR)
    timing = {"speech + animation": 0.0, "rendering": 0.0, "H.264 encoding": 0.0}
    frames_total = clips = 0
    checked = found = 0
    errors: list[float] = []
    per_emotion: dict[str, list[int]] = {e: [0, 0] for e in MEAD_EMOTIONS}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.identities):
            identity = make_identity(cfg.seed, i)
            for emotion in MEAD_EMOTIONS:
                spec = ClipSpec(i, emotion, 1 if emotion == "neutral" else 3, 0)
                t0 = time.perf_counter()
                _, audio, expression, pose = animate(identity, spec, cfg)
                t1 = time.perf_counter()
                frames, landmarks = render_clip(identity, expression, pose, cfg.resolution)
                t2 = time.perf_counter()
                wav = Path(tmp) / "a.wav"
                write_wav(wav, audio, cfg.sample_rate)
                encode_mp4(frames, wav, Path(tmp) / "v.mp4", cfg.fps)
                t3 = time.perf_counter()
                for key, dt in zip(timing, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                    timing[key] += dt
                clips += 1
                frames_total += len(frames)
                for t in range(0, len(frames), args.stride):
                    boxes = detector(frames[t], 1)
                    checked += 1
                    per_emotion[emotion][1] += 1
                    if boxes:
                        found += 1
                        per_emotion[emotion][0] += 1
                        shape = predictor(frames[t], boxes[0])
                        pts = np.array([[p.x, p.y] for p in shape.parts()])
                        width = np.ptp(landmarks[t][:17, 0])
                        errors.append(float(np.linalg.norm(pts - landmarks[t], axis=1).mean()
                                            / width))

    lines = [
        f"# Procedural dataset benchmark ({platform.processor() or platform.machine()}, "
        f"1 process, {cfg.resolution}x{cfg.resolution}, {clips} clips, {frames_total} frames)",
        "",
        "| part | seconds | clips/s | frames/s |",
        "|---|---|---|---|",
    ]
    for key, seconds in timing.items():
        lines.append(f"| {key} | {seconds:.2f} | {clips / seconds:.1f} | "
                     f"{frames_total / seconds:.0f} |")
    total = sum(timing.values())
    lines.append(f"| all | {total:.2f} | {clips / total:.2f} | {frames_total / total:.0f} |")
    lines += [
        "",
        "| face check (dlib HOG, upsample 1) | value |",
        "|---|---|",
        f"| frames checked | {checked} |",
        f"| detection rate | {found / checked:.3f} |",
        f"| dlib 68-point error vs. ground truth, mean / face width | {np.mean(errors):.4f} |",
        f"| same, 95th percentile | {np.percentile(errors, 95):.4f} |",
    ]
    lines += ["", "| emotion | detection rate |", "|---|---|"]
    lines += [f"| {e} | {hit / max(n, 1):.3f} |" for e, (hit, n) in per_emotion.items()]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
