"""One clip's features: decode, landmarks, smoothed crop, Head-Kps, head pose, Whisper features.

Writes `clips/<sample_id>.parquet` (one row per frame at `fps`, schema `CLIP_SCHEMA`) atomically,
or `quarantine/<sample_id>.json` with the reason when the clip cannot give usable features (no
face, silent audio, undecodable media, NaN). Never raises for a bad clip. Both record the
manifest's `content_hash` of the media they came from: a clip whose media changed under the same
`sample_id` is extracted again, never served stale.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic import write_parquet, write_text
from components.config import FeaturesConfig
from components.errors import SvpError
from components.features import audio as whisper_features
from components.features import landmarks as backends
from components.features.crop import crop_frame, smooth_boxes, to_crop
from components.features.expression import head_pose
from components.features.head_kps import head_kps
from components.media import decode_audio, decode_video, speech_dbfs

AUDIO_DIM = whisper_features.N_HIDDEN * 2 * whisper_features.WIDTH

CLIP_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("frame", pa.int32()),
    ("crop_jpeg", pa.binary()),  # crop_size x crop_size RGB face crop, JPEG
    ("box", pa.list_(pa.float32(), 3)),  # x0, y0, side of the crop in source pixels
    ("face_found", pa.bool_()),  # false: landmarks are NaN, the box is interpolated
    ("landmarks", pa.list_(pa.float32(), 136)),  # 68 (x, y) in crop pixels, iBUG order
    ("head_kps", pa.list_(pa.float32(), 16)),  # 8 (x, y) in crop pixels, head_kps.NAMES order
    ("head_pose", pa.list_(pa.float32(), 3)),  # yaw, pitch, roll in degrees (solvePnP)
    ("audio", pa.list_(pa.float16(), AUDIO_DIM)),  # Whisper (5 states, 2 steps, 384) per frame
])


SOURCE_KEY = "svp.content_hash"  # Parquet metadata: the manifest content_hash a clip came from


class Quarantined(Exception):
    """This clip cannot give usable features; the message says why."""


def landmark_backend(cfg: FeaturesConfig, has_sidecar: bool):
    """The landmark function for a clip: frames (T, H, W, 3) -> (T, 68, 2)."""
    kind = cfg.landmarks
    if kind == "auto":
        kind = "sidecar" if has_sidecar else "dlib"
    if kind == "sidecar":
        return None
    if kind == "dlib":
        return _cached_backend("dlib", cfg.dlib_predictor, None)
    return _cached_backend("face_alignment", cfg.dlib_predictor, cfg.face_alignment_hub)


_BACKENDS: dict[tuple, object] = {}


def _cached_backend(kind: str, predictor: str, hub: str | None):
    key = (kind, predictor, hub)
    if key not in _BACKENDS:
        _BACKENDS[key] = (backends.DlibLandmarks(predictor) if kind == "dlib"
                          else backends.FaceAlignmentLandmarks(hub, predictor))
    return _BACKENDS[key]


def resample_frames(n_source: int, source_fps: float, fps: float) -> np.ndarray:
    """Source frame index for each output frame at `fps` (nearest in time)."""
    n_out = max(1, round(n_source / source_fps * fps))
    return np.clip(np.round(np.arange(n_out) * source_fps / fps).astype(int), 0, n_source - 1)


def compute_clip(row: dict, cfg: FeaturesConfig) -> pa.Table:
    """All per-frame features of one manifest row; raises Quarantined for an unusable clip."""
    try:
        frames, source_fps = decode_video(Path(row["video_path"]))
        samples, _ = decode_audio(Path(row["audio_path"]), whisper_features.SAMPLE_RATE)
    except Exception as err:  # any decoder failure is this clip's problem, not the run's
        raise Quarantined(f"cannot decode media: {' '.join(str(err).split())[:160]}") from None
    if len(samples) == 0 or speech_dbfs(samples, whisper_features.SAMPLE_RATE) < cfg.min_audio_dbfs:
        raise Quarantined(f"audio is silent (below {cfg.min_audio_dbfs} dBFS)")

    backend = landmark_backend(cfg, bool(row.get("sidecar_path")))
    if backend is None:
        points = backends.from_sidecar(row["sidecar_path"], len(frames))
    else:
        points = backend(frames)
    keep = resample_frames(len(frames), source_fps, cfg.fps)
    frames, points = frames[keep], points[keep]
    found = ~np.isnan(points).any(axis=(1, 2))
    missing = 1 - found.mean()
    if missing > cfg.max_missing_face_share:
        raise Quarantined(f"no face found in {missing:.0%} of frames "
                          f"(max_missing_face_share {cfg.max_missing_face_share:.0%})")

    boxes = smooth_boxes(points, cfg.crop_scale, cfg.box_smoothing)
    pose = head_pose(points, frames.shape[1:3])
    crops = []
    for frame, box in zip(frames, boxes, strict=True):
        crop = crop_frame(frame, box, cfg.crop_size)
        _, jpeg = cv2.imencode(".jpg", crop[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY,
                                                          cfg.jpeg_quality])
        crops.append(jpeg.tobytes())
    local = np.stack([to_crop(p, b, cfg.crop_size) for p, b in zip(points, boxes, strict=True)])
    kps = head_kps(local)
    states = whisper_features.encode_clip(samples, cfg.whisper_checkpoint)
    speech = whisper_features.per_frame(states, len(frames), cfg.fps).reshape(len(frames), -1)
    if not np.isfinite(speech).all() or not np.isfinite(boxes).all():
        raise Quarantined("non-finite values in the audio features or crop boxes")

    n = len(frames)
    table = pa.Table.from_pydict({
        "sample_id": [row["sample_id"]] * n,
        "frame": np.arange(n, dtype=np.int32),
        "crop_jpeg": crops,
        "box": list(boxes),
        "face_found": found,
        "landmarks": list(local.reshape(n, -1)),
        "head_kps": list(kps.reshape(n, -1)),
        "head_pose": list(pose),
        "audio": list(speech.astype(np.float16)),
    }, schema=CLIP_SCHEMA)
    return table.replace_schema_metadata({SOURCE_KEY: row.get("content_hash") or ""})


def clip_path(out_dir: Path, sample_id: str) -> Path:
    return out_dir / "clips" / f"{sample_id}.parquet"


def quarantine_path(out_dir: Path, sample_id: str) -> Path:
    return out_dir / "quarantine" / f"{sample_id}.json"


def _source(row: dict) -> str:
    return row.get("content_hash") or ""


def current_result(out_dir: Path, row: dict) -> dict | None:
    """This clip's result if it was made from the media the row names now, else None."""
    done, bad = clip_path(out_dir, row["sample_id"]), quarantine_path(out_dir, row["sample_id"])
    if done.exists():
        made_from = (pq.read_schema(done).metadata or {}).get(SOURCE_KEY.encode(), b"").decode()
        if made_from == _source(row):
            return {"sample_id": row["sample_id"], "status": "done", "reason": None}
    if bad.exists():
        result = json.loads(bad.read_text())
        if result.get("content_hash", "") == _source(row):
            return {k: result[k] for k in ("sample_id", "status", "reason")}
    return None


def extract_clip(row: dict, cfg: FeaturesConfig, out_dir: str) -> dict:
    """Process one clip unless already done from the same media; returns {sample_id, status,
    reason}."""
    out = Path(out_dir)
    if (result := current_result(out, row)) is not None:
        return result
    done, bad = clip_path(out, row["sample_id"]), quarantine_path(out, row["sample_id"])
    try:
        write_parquet(done, compute_clip(row, cfg))
        bad.unlink(missing_ok=True)
        return {"sample_id": row["sample_id"], "status": "done", "reason": None}
    except Quarantined as why:
        result = {"sample_id": row["sample_id"], "status": "quarantined", "reason": str(why)}
        write_text(bad, json.dumps(result | {"content_hash": _source(row)}) + "\n")
        done.unlink(missing_ok=True)
        return result
    except SvpError:
        raise  # a setup problem (missing weights, bad path): every clip would fail
