"""`svp data latents` (DVC stage `latents`): every clip in the generator's crop, encoded once.

The features stage's crops follow the head frame by frame, which takes the head's motion out of
the picture. The generator instead makes a still camera shot with the head moving in it (what
Head-Kps control means, and what V-Express and Hallo train on), so each clip gets one square
box: the union of its per-frame face boxes. Frames are cut from the source video with it at
`diffusion.resolution`, encoded by the VAE (posterior means, scaled), and stored with the
landmarks and Head-Kps moved into the same crop.

Layout under `out_dir`:

    clips/<sample_id>.parquet   frame, latent (float16, C·h·w), image_jpeg, landmarks (136),
                                head_kps (16) in crop pixels; schema metadata svp.latent_shape
    index.parquet               sample_id, identity, emotion, level, style_group, split,
                                n_frames, box (x0, y0, side in source pixels), latents_path
    config.json                 what made the folder (params, VAE and features versions)

Finished clips survive a kill (atomic per-clip files, `persist: true` in DVC); a changed VAE,
features or params start over.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from components.atomic import keep_only_if_made_by, write_parquet
from components.config import DiffusionConfig, LatentsConfig
from components.diffusion.frames import read_index
from components.diffusion.models.vae import encode
from components.errors import SvpError
from components.features.crop import crop_frame, to_crop, union_box
from components.features.extract import resample_frames
from components.features.head_kps import head_kps
from components.media import decode_video
from components.paths import absolute, resolve, to_stored, with_absolute_media
from components.progress import progress
from components.tracking import dvc_out_hash, log_stage
from components.training.registry import load_pretrained

log = logging.getLogger(__name__)

CLIP_SCHEMA = pa.schema([
    ("frame", pa.int32()),
    ("latent", pa.list_(pa.float16())),
    ("image_jpeg", pa.binary()),
    ("landmarks", pa.list_(pa.float32(), 136)),
    ("head_kps", pa.list_(pa.float32(), 16)),
])
JPEG_QUALITY = 95
PROCEDURAL_SEED = 2_000_003  # the procedural faces' identities differ from the dataset's


def crop_clip(row: dict, features_dir: Path, fps: float, crop_size: int, resolution: int):
    """Frames (T, R, R, 3) in the clip's box, landmarks (T, 68, 2) in crop pixels, the box."""
    table = pq.read_table(resolve(row["features_path"], features_dir),
                          columns=["box", "landmarks"])
    boxes = np.stack(table["box"].to_numpy(zero_copy_only=False))
    local = np.stack(table["landmarks"].to_numpy(zero_copy_only=False)).reshape(-1, 68, 2)
    source = boxes[:, None, :2] + local * boxes[:, None, 2:3] / crop_size
    video, source_fps = decode_video(resolve(row["video_path"]))
    video = video[resample_frames(len(video), source_fps, fps)][: len(boxes)]
    if len(video) != len(boxes):
        raise SvpError(f"{row['video_path']}: {len(video)} frames, the features have "
                       f"{len(boxes)}")
    box = union_box(boxes)
    frames = np.stack([crop_frame(frame, box, resolution) for frame in video])
    return frames, to_crop(source, box, resolution), box


def encode_clip(row: dict, job: dict, vae) -> None:
    """Crop, encode and write one clip."""
    frames, landmarks, box = crop_clip(row, Path(job["features_dir"]), job["fps"],
                                       job["crop_size"], job["resolution"])
    latents = encode(vae, frames, job["batch_size"])
    write_parquet(Path(job["out_dir"]) / "clips" / f"{row['sample_id']}.parquet",
                  clip_table(latents, frames, landmarks, box))


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "none"


def build_latents(cfg: LatentsConfig, diffusion: DiffusionConfig) -> dict:
    started = time.time()
    out, features_dir = absolute(cfg.out_dir), absolute(cfg.features_dir)
    features_params = json.loads((features_dir / "config.json").read_text())
    vae_dir = absolute(cfg.vae_dir)
    # neither the device nor the batch changes the latents (the same bytes for 16 and 64 frames)
    recipe = {"latents": asdict(cfg) | {"use_gpu": None, "batch_size": None},
              "resolution": diffusion.resolution,
              "vae": _version(vae_dir / "diffusion_pytorch_model.safetensors"),
              "features": _version(features_dir / "index.parquet")}
    if keep_only_if_made_by(out, recipe):
        log.info("VAE, features or params changed; cleared %s", out)
    index = read_index(features_dir).to_dict("records")
    job = {"features_dir": str(features_dir), "vae_dir": str(vae_dir), "out_dir": str(out),
           "fps": features_params["fps"], "crop_size": features_params["crop_size"],
           "resolution": diffusion.resolution, "batch_size": cfg.batch_size}
    todo = [with_absolute_media(r) for r in index
            if not (out / "clips" / f"{r['sample_id']}.parquet").exists()]
    log.info("%d clips, %d to encode", len(index), len(todo))
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL

    device = "cuda" if cfg.use_gpu and torch.cuda.is_available() else "cpu"
    vae = load_pretrained(AutoencoderKL, vae_dir).to(device)
    for row in progress(todo, len(todo), "latents", "clips"):
        encode_clip(row, job, vae)
    rows = []
    for row in index:
        path = out / "clips" / f"{row['sample_id']}.parquet"
        meta = pq.read_schema(path).metadata
        rows.append({"sample_id": row["sample_id"], "identity": row["identity"],
                     "emotion": row["emotion"], "level": row["level"],
                     "style_group": row["style_group"], "split": row["split"],
                     "n_frames": pq.read_metadata(path).num_rows,
                     "box": [float(v) for v in meta[b"svp.box"].decode().split(",")],
                     "latents_path": to_stored(path, out)})
    rows += procedural_clips(cfg, diffusion, vae, features_params, out)
    table = pa.Table.from_pylist(rows)
    write_parquet(out / "index.parquet", table)
    result = {"n_clips": len(rows), "n_frames": int(sum(r["n_frames"] for r in rows)),
              "n_procedural": sum(r["split"] == "procedural" for r in rows),
              "latent_shape": pq.read_schema(out / rows[0]["latents_path"]).metadata[
                  b"svp.latent_shape"].decode()}
    log_stage("svp-diffusion", "latents", asdict(cfg) | {"resolution": diffusion.resolution},
              result, [], {"dvc.features": dvc_out_hash(cfg.features_dir),
                           "dvc.vae": dvc_out_hash(cfg.vae_dir)}, started=started)
    return result


def procedural_clips(cfg: LatentsConfig, diffusion: DiffusionConfig, vae, features: dict,
                     out: Path) -> list[dict]:
    """Still shots of `procedural_identities` unseen procedural faces (split `procedural`),
    for stage 1 to learn copying a face it never saw (`components/synth/stills.py`)."""
    from components.synth.stills import procedural_faces, still_shots

    rows = []
    faces = procedural_faces(cfg.procedural_identities, cfg.procedural_frames,
                             PROCEDURAL_SEED, 2 * diffusion.resolution)
    for index, (frames, landmarks) in enumerate(progress(faces, cfg.procedural_identities,
                                                         "procedural faces", "identities")):
        name = f"P{index:04d}"
        path = out / "clips" / "procedural" / f"{name}.parquet"
        if not path.exists():
            shots, local = still_shots(frames, landmarks, features["crop_scale"],
                                       diffusion.resolution)
            write_parquet(path, clip_table(encode(vae, shots, cfg.batch_size), shots, local,
                                           np.zeros(3, np.float32)))
        rows.append({"sample_id": name, "identity": name, "emotion": None, "level": None,
                     "style_group": name, "split": "procedural",
                     "n_frames": cfg.procedural_frames, "box": [0.0, 0.0, 0.0],
                     "latents_path": to_stored(path, out)})
    return rows


def clip_table(latents, frames: np.ndarray, landmarks: np.ndarray, box: np.ndarray) -> pa.Table:
    latents = latents.half().numpy()
    jpegs = [cv2.imencode(".jpg", f[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])[1]
             .tobytes() for f in frames]
    return pa.Table.from_pydict({
        "frame": np.arange(len(frames), dtype=np.int32),
        "latent": list(latents.reshape(len(latents), -1)),
        "image_jpeg": jpegs,
        "landmarks": list(landmarks.reshape(len(frames), -1)),
        "head_kps": list(head_kps(landmarks).reshape(len(frames), -1)),
    }, schema=CLIP_SCHEMA).replace_schema_metadata(
        {"svp.latent_shape": ",".join(map(str, latents.shape[1:])),
         "svp.box": ",".join(f"{v:.3f}" for v in box)})
