"""fp32 against bf16 autocast for the parts that were still fp32: the VAE's encoder (`latents`)
and decoder (every generated frame), a SyncNet training step (`train_syncnet`), and FID's
Inception and FVD's I3D (`evaluate.features_bf16`).

    .venv/bin/python benchmarks/bf16_parts.py [--out benchmarks/bf16_parts.md]

Uses the pipeline's trained VAE (`latents.vae_dir`) on its own held-out frames when a run left
them (`data/latents`), else an untrained VAE of params' architecture on noise. Seconds per frame
(VAE) or per step (SyncNet, params' batch), the speed-up, and how far bf16's output is from
fp32's: latents and SyncNet embeddings as the largest difference against the mean magnitude,
decoded frames in 8-bit levels, FID / FVD between the two halves of the frames as each
precision measures them.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from table import cpu_name, emit

from components.config import load_params
from components.diffusion.frames import decode_jpegs, read_index
from components.diffusion.models.vae import decode, encode, load_pretrained_vae, new_vae
from components.evaluation.fid import InceptionFeatures
from components.evaluation.frechet import frechet_distance
from components.evaluation.fvd import CLIP_FRAMES, I3DFeatures, video_clips
from components.precision import bf16_units
from components.syncnet.model import SyncNet
from components.syncnet.objective import sync_infonce
from components.syncnet.train import model_config

FRAMES = 256


def seconds(run: Callable[[], object], repeats: int = 3) -> tuple[float, object]:
    """The fastest of `repeats` timed calls after one warm-up, and the last call's result."""
    result = run()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        result = run()
        best = min(best, time.perf_counter() - started)
    return best, result


def under(bf16: bool, run: Callable[[], object]) -> Callable[[], object]:
    def wrapped():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            return run()
    return wrapped


def test_frames(latents_dir: Path, resolution: int) -> tuple[np.ndarray, str]:
    """Held-out frames the latents stage cropped, or noise when there are none."""
    if (latents_dir / "index.parquet").is_file():
        frames = []
        for path in read_index(latents_dir, "test")["latents_path"]:
            jpegs = pq.read_table(latents_dir / path, columns=["image_jpeg"])["image_jpeg"]
            frames.append(decode_jpegs(jpegs.to_pylist()[:16]))
            if sum(map(len, frames)) >= FRAMES:
                return np.concatenate(frames)[:FRAMES], "held-out frames"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (FRAMES, resolution, resolution, 3), np.uint8), "noise"


def vae_rows(params) -> list[str]:
    folder = Path(params.latents.vae_dir)
    trained = (folder / "config.json").is_file()
    vae = load_pretrained_vae(folder) if trained else new_vae(params.diffusion)
    frames, source = test_frames(Path(params.latents.out_dir), params.diffusion.resolution)
    rows = []
    fp32_s, z = seconds(under(False, lambda: encode(vae, frames)))
    bf16_s, zb = seconds(under(True, lambda: encode(vae, frames)))
    rows.append(f"| VAE encode ({'trained' if trained else 'untrained'}, {source}) | "
                f"{1000 * fp32_s / FRAMES:.2f} ms/frame | {1000 * bf16_s / FRAMES:.2f} ms/frame | "
                f"{fp32_s / bf16_s:.2f}x | latents: max {float((z - zb).abs().max()):.3f}, "
                f"mean magnitude {float(z.abs().mean()):.3f} |")
    fp32_s, x = seconds(under(False, lambda: decode(vae, z)))
    bf16_s, xb = seconds(under(True, lambda: decode(vae, z)))
    levels = np.abs(x.astype(int) - xb)
    rows.append(f"| VAE decode | {1000 * fp32_s / FRAMES:.2f} ms/frame | "
                f"{1000 * bf16_s / FRAMES:.2f} ms/frame | {fp32_s / bf16_s:.2f}x | "
                f"frames: max {levels.max()} levels, mean {levels.mean():.3f} |")
    return rows


def feature_rows(params) -> list[str]:
    """Inception on every 4th frame (as `evaluate.fid_every`) and I3D on 16-frame clips, each in
    fp32 and under bf16 autocast; FID / FVD between the frames' two halves."""
    frames, source = test_frames(Path(params.latents.out_dir), params.diffusion.resolution)
    rows = []
    for name, metric, unit, data, network in (
            (f"Inception ({source})", "FID", "frame", frames[::4], InceptionFeatures),
            ("I3D", "FVD", "clip", video_clips(frames, CLIP_FRAMES), I3DFeatures)):
        half = len(data) // 2
        (fp32_s, exact), (bf16_s, rounded) = (seconds(partial(network(bf16=bf16), data), 1)
                                              for bf16 in (False, True))
        exact_d, rounded_d = (frechet_distance(f[:half], f[half:]) for f in (exact, rounded))
        rows.append(f"| {name} | {1000 * fp32_s / len(data):.0f} ms/{unit} | "
                    f"{1000 * bf16_s / len(data):.0f} ms/{unit} | {fp32_s / bf16_s:.2f}x | "
                    f"{metric} of two {half}-{unit} sets: {exact_d:.2f} against {rounded_d:.2f} "
                    f"({100 * (rounded_d / exact_d - 1):+.1f}%) |")
    return rows


def syncnet_row(params) -> str:
    cfg = params.train_syncnet
    torch.manual_seed(0)
    model = SyncNet(**model_config(cfg))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    faces = torch.rand(cfg.batch_size, 3, 5, cfg.face_size, cfg.face_size) * 255
    audio = torch.randn(cfg.batch_size, 1, 13, 20)
    shifted = torch.randn(cfg.batch_size * cfg.negatives, 1, 13, 20)

    def step(bf16: bool):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            face, own = model(faces, audio)
            other = model.forward_audio(shifted).view(cfg.batch_size, cfg.negatives, -1)
        loss = sync_infonce(face.float(), own.float(), other.float())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return face.detach().float()

    fp32_s, _ = seconds(lambda: step(False), 10)
    bf16_s, _ = seconds(lambda: step(True), 10)
    with torch.no_grad():
        face = model.forward_face(faces)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            face_bf16 = model.forward_face(faces).float()
    return (f"| SyncNet training step (batch {cfg.batch_size}, {cfg.negatives} negatives) | "
            f"{fp32_s:.3f} s | {bf16_s:.3f} s | {fp32_s / bf16_s:.2f}x | face embedding: max "
            f"{float((face - face_bf16).abs().max()):.3f}, mean magnitude "
            f"{float(face.abs().mean()):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    params = load_params()
    units = bf16_units(torch.device("cpu"))
    lines = [f"Machine: {cpu_name()}, {torch.get_num_threads()} threads; bf16 units: "
             f"{units or 'none (bf16 autocast emulated: expect it slower)'}.", "",
             "| part | fp32 | bf16 autocast | speed-up | bf16 against fp32 |",
             "|---|---|---|---|---|", *vae_rows(params), syncnet_row(params),
             *feature_rows(params)]
    emit(lines, args.out)


if __name__ == "__main__":
    main()
