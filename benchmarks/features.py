"""Throughput of each part of feature extraction, and Whisper without vs. with 30 s padding.

    .venv/bin/python benchmarks/features.py [--manifest data/validated/manifest.parquet]
                                            [--clips 16] [--out benchmarks/features.md]

Runs on the validated manifest of `svp pipeline run` (the embedded dataset by default). The
face-alignment row uses random FAN/s3fd weights written to a temporary hub folder: the real
weights are not available offline, and speed does not depend on their values.
"""

from __future__ import annotations

import argparse
import platform
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from table import emit

from components.config import FeaturesConfig
from components.features import audio as wf
from components.features import landmarks as lmk
from components.features.crop import crop_frame, smooth_boxes
from components.features.expression import head_pose
from components.features.stage import build_features
from components.media import decode_audio, decode_video


def timed(fn, *args):
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--manifest", default="data/validated/manifest.parquet")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--fan-frames", type=int, default=4, help="frames per clip for FAN")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = pq.read_table(args.manifest).to_pylist()[: args.clips]
    cfg = FeaturesConfig()
    seconds: dict[str, float] = {}
    frames_seen: dict[str, int] = {}
    similarity, max_diff = [], []

    def add(name: str, dt: float, n: int) -> None:
        seconds[name] = seconds.get(name, 0.0) + dt
        frames_seen[name] = frames_seen.get(name, 0) + n

    with tempfile.TemporaryDirectory() as hub:
        from face_alignment.detection.sfd.net_s3fd import s3fd
        from face_alignment.models import FAN

        (Path(hub) / "checkpoints").mkdir()
        torch.save(FAN(4).state_dict(), Path(hub) / "checkpoints" / lmk.FAN_WEIGHTS)
        torch.save(s3fd().state_dict(), Path(hub) / "checkpoints" / lmk.S3FD_WEIGHTS)
        dlib_backend = lmk.DlibLandmarks(cfg.dlib_predictor)
        fan_backend = lmk.FaceAlignmentLandmarks(hub, cfg.dlib_predictor)
        wf.encode_clip(np.zeros(16000, np.float32))  # load the encoder outside the timings
        for row in rows:
            (frames, _), dt = timed(decode_video, Path(row["video_path"]))
            n = len(frames)
            add("decode video (PyAV)", dt, n)
            (samples, _), dt = timed(decode_audio, Path(row["audio_path"]), 16000)
            add("decode audio to 16 kHz", dt, n)
            if row["sidecar_path"]:
                points, dt = timed(lmk.from_sidecar, row["sidecar_path"], n)
                add("landmarks: sidecar", dt, n)
            points, dt = timed(dlib_backend, frames)
            add("landmarks: dlib HOG + 68-pt", dt, n)
            k = min(n, args.fan_frames)
            _, dt = timed(fan_backend, frames[:k])
            add("landmarks: face-alignment FAN (CPU)", dt, k)
            start = time.perf_counter()
            boxes = smooth_boxes(points, cfg.crop_scale, cfg.box_smoothing)
            for frame, box in zip(frames, boxes, strict=True):
                crop_frame(frame, box, cfg.crop_size)
            add(f"crop {cfg.crop_size}px (smoothed box)", time.perf_counter() - start, n)
            _, dt = timed(head_pose, points, frames.shape[1:3])
            add("head pose (solvePnP)", dt, n)
            ours, dt = timed(wf.encode_clip, samples)
            add("Whisper-Tiny, clip length (ours)", dt, n)
            padded, dt = timed(wf.encode_clip_padded, samples)
            add("Whisper-Tiny, padded to 30 s (naive)", dt, n)
            cos = (ours * padded).sum(-1) / (np.linalg.norm(ours, axis=-1)
                                             * np.linalg.norm(padded, axis=-1))
            similarity.append(cos.mean(axis=1))
            max_diff.append(np.abs(ours - padded).max(axis=(1, 2)))

    with tempfile.TemporaryDirectory() as tmp:
        manifest = Path(tmp) / "m.parquet"
        pq.write_table(pa.Table.from_pylist(rows), manifest)
        stage_cfg = replace(cfg, manifest=str(manifest), out_dir=f"{tmp}/f",
                            report_dir=f"{tmp}/r")
        metrics, stage_seconds = timed(build_features, stage_cfg)

    n_clips = len(rows)
    lines = [f"# Feature extraction benchmark ({platform.machine()}, 2 cores, torch threads 1; "
             f"{n_clips} clips of the embedded dataset, 128x128 at 25 fps)", "",
             "| part (one process) | clips/s | frames/s |", "|---|---|---|"]
    # FAN runs on --fan-frames frames per clip only (it is slow on CPU); its clips/s is
    # projected from its frame rate, like every row's.
    per_clip = frames_seen["decode video (PyAV)"] / n_clips  # mean frames in a clip
    lines += [f"| {name} | {frames_seen[name] / dt / per_clip:.2f} | "
              f"{frames_seen[name] / dt:.0f} |" for name, dt in seconds.items()]
    lines += ["", f"Whole stage (`build_features`, {cfg.workers} worker processes, sidecar "
              f"landmarks, incl. expression basis and GX checks): {n_clips / stage_seconds:.2f} "
              f"clips/s, {metrics['n_frames'] / stage_seconds:.0f} frames/s.", ""]
    speedup = seconds["Whisper-Tiny, padded to 30 s (naive)"] / seconds[
        "Whisper-Tiny, clip length (ours)"]
    sim, diff = np.mean(similarity, axis=0), np.max(max_diff, axis=0)
    lines += [f"Whisper: encoding each clip at its own length is {speedup:.1f}x faster than "
              "padding every clip to 30 s. Outputs compared on the same clips (stand-in weights):",
              "", "| hidden state | mean cosine, ours vs padded | max abs difference |",
              "|---|---|---|"]
    names = ["embedding (conv + position)"] + [f"block {i}" for i in range(1, 4)] + [
        "block 4 + final layer norm"]
    lines += [f"| {n} | {s:.4f} | {d:.3f} |" for n, s, d in zip(names, sim, diff, strict=True)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
