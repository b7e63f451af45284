"""`svp data features`: every validated clip's features, in parallel, resumable.

Layout under `out_dir`:

    clips/<sample_id>.parquet      per-frame features (`extract.CLIP_SCHEMA`)
    quarantine/<sample_id>.json    why a clip gave no features (kept across reruns)
    expression.parquet             sample_id, frame, expression (n floats)
    expression_basis.npz           the landmark basis fitted on the training split (`basis`)
    index.parquet                  the clips that passed, with their labels and split;
                                   `features_path` is relative to `out_dir`
    quarantine.parquet             every clip set aside, with its reasons
    config.json                    the params and code version that produced the folder

Pass 1 extracts clips (a process pool here; Ray tasks when `RAY_ADDRESS` is set) and can be killed
and rerun: finished clips are kept, half-written files never exist. Pass 2 fits the expression
basis on the training identities, writes the coefficients, and checks everything with a Great
Expectations suite.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from components.atomic import keep_only_if_made_by, write_parquet, write_text
from components.config import FeaturesConfig
from components.disk import disk_full, folder_bytes, is_disk_full
from components.errors import SvpError
from components.expectations import Rule, run_suite
from components.features.expression import (
    fit_basis,
    identity_mean_shape,
    load_3dmm,
)
from components.features.extract import clip_path, current_result, extract_clip
from components.paths import absolute, with_absolute_media
from components.progress import pool_map, progress
from components.tracking import log_stage

log = logging.getLogger(__name__)

INDEX_COLUMNS = ["sample_id", "identity", "emotion", "level", "style_group", "split",
                 "video_path"]


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)  # one clip per core; no oversubscription


def run_on_ray(fn: Callable, rows: list[dict], *args) -> Iterator[dict]:
    """One Ray task per clip on the cluster `RAY_ADDRESS` names (`local` starts one here)."""
    import ray

    ray.init(address=os.environ["RAY_ADDRESS"], ignore_reinit_error=True, log_to_driver=False,
             include_dashboard=False)
    remote = ray.remote(num_cpus=1)(fn)
    pending = [remote.remote(row, *args) for row in rows]
    while pending:
        ready, pending = ray.wait(pending, num_returns=1)
        yield ray.get(ready[0])


def code_version() -> str:
    """A hash of the code that writes the per-clip files (every module `extract` imports, at any
    depth): a change re-extracts every clip."""
    import hashlib

    from components.code_deps import import_closure

    root = Path(__file__).resolve().parents[2]
    digest = hashlib.sha256()
    for path in sorted(import_closure(["components.features.extract"], root)):
        digest.update(path.as_posix().encode() + (root / path).read_bytes())
    return digest.hexdigest()[:16]


def _reset_if_inputs_changed(out: Path, cfg: FeaturesConfig) -> None:
    recipe = asdict(cfg) | {"workers": None, "code_version": code_version()}
    if keep_only_if_made_by(out, recipe):
        log.info("features params or code changed; cleared %s", out)


def _features_disk_full(out: Path, rows: list[dict]) -> SvpError:
    """The one line for a full disk, with the space the clips left will take (at the mean size of
    those written so far)."""
    written = folder_bytes(out / "clips", "*.parquet")
    left = sum(current_result(out, r) is None for r in rows)
    needed = round(left * sum(written) / len(written)) if written else None
    return disk_full(out, needed, f"{len(rows) - left} of {len(rows)} clips are done and are "
                                  "kept; a rerun extracts the rest")


def extract_all(cfg: FeaturesConfig, rows: list[dict]) -> list[dict]:
    out = absolute(cfg.out_dir)
    rows = [with_absolute_media(r) for r in rows]  # workers may run anywhere, in any folder
    todo = [r for r in rows if current_result(out, r) is None]
    log.info("%d clips, %d to extract", len(rows), len(todo))
    if os.environ.get("RAY_ADDRESS"):
        results = progress(run_on_ray(extract_clip, todo, cfg, str(out)), len(todo),
                           "features", "clips")
    else:
        results = pool_map(extract_clip, todo, cfg, str(out), workers=cfg.workers,
                           desc="features", unit="clips", initializer=_init_worker)
    try:
        for _ in results:
            pass
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise _features_disk_full(out, rows) from None
    # every clip's status, from disk, whoever processed it and whenever
    return [extract_clip(row, cfg, str(out)) for row in rows]


def expression_table(cfg: FeaturesConfig, rows: list[dict]) -> pa.Table:
    """Expression coefficients of every extracted clip (fits the basis first if needed)."""
    out = Path(cfg.out_dir)
    frames = {r["sample_id"]: pq.read_table(clip_path(out, r["sample_id"]),
                                            columns=["landmarks", "head_pose", "face_found"])
              for r in rows}
    coefficients: dict[str, np.ndarray] = {}
    if cfg.expression == "3dmm":
        for r in rows:
            n = frames[r["sample_id"]].num_rows
            coeffs = load_3dmm(cfg.expression_dir, r["sample_id"], r["video_path"])
            coefficients[r["sample_id"]] = coeffs[:n] if len(coeffs) >= n else np.pad(
                coeffs, ((0, n - len(coeffs)), (0, 0)), constant_values=np.nan)
    else:
        arrays = {sid: (np.stack(t["landmarks"].to_numpy(zero_copy_only=False)).reshape(-1, 68, 2),
                        np.stack(t["head_pose"].to_numpy(zero_copy_only=False)),
                        t["face_found"].to_numpy())
                  for sid, t in frames.items()}
        train = [(r["identity"], arrays[r["sample_id"]][0][arrays[r["sample_id"]][2]],
                  arrays[r["sample_id"]][1][arrays[r["sample_id"]][2]])
                 for r in rows if r["split"] == "train"]
        basis = fit_basis(train, cfg.n_expression)
        basis.save(out / "expression_basis.npz")
        by_identity: dict[str, list[np.ndarray]] = {}
        for r in rows:
            lm, _, found = arrays[r["sample_id"]]
            by_identity.setdefault(r["identity"], []).append(lm[found])
        means = {i: identity_mean_shape(lms, basis.mean_shape) for i, lms in by_identity.items()}
        for r in rows:
            lm, pose, found = arrays[r["sample_id"]]
            filled = np.where(found[:, None, None], lm, basis.mean_shape)  # NaN-free for align
            coeffs = basis.coefficients(filled, pose, means[r["identity"]])
            coeffs[~found] = np.nan
            coefficients[r["sample_id"]] = coeffs
    sample_ids, frame_ids, values = [], [], []
    for sid, coeffs in coefficients.items():
        sample_ids += [sid] * len(coeffs)
        frame_ids.append(np.arange(len(coeffs), dtype=np.int32))
        values += list(coeffs.astype(np.float32))
    width = next(iter(coefficients.values())).shape[1]
    return pa.table({"sample_id": sample_ids, "frame": np.concatenate(frame_ids),
                     "expression": pa.array(values, pa.list_(pa.float32(), width))})


def clip_summary(cfg: FeaturesConfig, rows: list[dict], expression: pa.Table) -> pd.DataFrame:
    """One row per clip with the numbers the GX suite checks."""
    out = Path(cfg.out_dir)
    expr = expression.to_pandas().groupby("sample_id")["expression"]
    records = []
    for r in rows:
        table = pq.read_table(clip_path(out, r["sample_id"]),
                              columns=["landmarks", "face_found", "audio"])
        found = table["face_found"].to_numpy()
        lm = np.stack(table["landmarks"].to_numpy(zero_copy_only=False))[found]
        speech = np.stack(table["audio"].to_numpy(zero_copy_only=False))
        coeffs = np.stack(expr.get_group(r["sample_id"]).to_numpy())[found]
        records.append({
            "sample_id": r["sample_id"],
            "n_frames": table.num_rows,
            "n_audio_frames": int(np.isfinite(speech).all(axis=1).sum()),
            "expected_frames": round(r["duration_s"] * cfg.fps),
            "landmark_nan_share": float(np.isnan(lm).any(axis=1).mean()) if len(lm) else 1.0,
            "landmarks_outside_share": float(((lm < -0.25 * cfg.crop_size)
                                              | (lm > 1.25 * cfg.crop_size)).any(axis=1).mean()),
            "expression_nonfinite": int((~np.isfinite(coeffs)).sum()),
            "expression_absmax": float(np.nanmax(np.abs(coeffs))) if coeffs.size else 0.0,
        })
    df = pd.DataFrame(records)
    df["frame_count_gap"] = (df["n_audio_frames"] - df["n_frames"]).abs() + (
        df["n_frames"] - df["expected_frames"]).abs()
    return df


def feature_rules(cfg: FeaturesConfig) -> list[Rule]:
    import great_expectations as gx

    e = gx.expectations
    return [
        Rule(e.ExpectColumnValuesToBeBetween(column="landmark_nan_share", max_value=0),
             "NaN landmarks in {value} of the frames with a face"),
        Rule(e.ExpectColumnValuesToBeBetween(column="landmarks_outside_share", max_value=0.05),
             "landmarks outside the crop in {value} of the frames"),
        Rule(e.ExpectColumnValuesToBeBetween(column="frame_count_gap", max_value=2),
             "audio and video frame counts disagree by {value} frames"),
        Rule(e.ExpectColumnValuesToBeBetween(column="expression_nonfinite", max_value=0),
             "{value} non-finite expression values"),
        Rule(e.ExpectColumnValuesToBeBetween(column="expression_absmax", max_value=50),
             "expression coefficient {value} out of range (|z| > 50)"),
    ]


def build_features(cfg: FeaturesConfig) -> dict:
    manifest = Path(cfg.manifest)
    if not manifest.is_file():
        raise SvpError(f"{manifest}: validated manifest not found (run `svp data validate`)")
    rows = pq.read_table(manifest).to_pylist()
    if not rows:
        raise SvpError(f"{manifest}: no validated samples")
    out = Path(cfg.out_dir)
    _reset_if_inputs_changed(out, cfg)
    results = extract_all(cfg, rows)
    status = {r["sample_id"]: r for r in results}
    extracted = [r for r in rows if status[r["sample_id"]]["status"] == "done"]
    reasons = {sid: [r["reason"]] for sid, r in status.items() if r["status"] != "done"}
    if not any(r["split"] == "train" for r in extracted):
        raise SvpError(f"{manifest}: no training clip gave features; see "
                       f"{out / 'quarantine'}")

    expression = expression_table(cfg, extracted)
    write_parquet(out / "expression.parquet", expression)
    summary = clip_summary(cfg, extracted, expression)
    checks, failing = run_suite(summary, feature_rules(cfg), "svp-features")
    for sid, why in failing.items():
        reasons.setdefault(sid, []).extend(why)

    passed = [r for r in extracted if r["sample_id"] not in reasons]
    index = pd.DataFrame(passed)[INDEX_COLUMNS].merge(
        summary[["sample_id", "n_frames"]], on="sample_id")
    index["features_path"] = [clip_path(Path(), s).as_posix() for s in index["sample_id"]]
    write_parquet(out / "index.parquet", pa.Table.from_pandas(index, preserve_index=False))
    by_id = {r["sample_id"]: r for r in rows}
    quarantine = pd.DataFrame(
        [{"sample_id": s, "video_path": by_id[s]["video_path"], "reasons": " | ".join(w)}
         for s, w in sorted(reasons.items())], columns=["sample_id", "video_path", "reasons"])
    write_parquet(out / "quarantine.parquet", pa.Table.from_pandas(quarantine,
                                                                   preserve_index=False))
    for row in quarantine.itertuples():
        log.warning("features quarantined %s: %s", row.video_path, row.reasons)

    metrics = {
        "n_clips": len(rows), "n_passed": len(passed), "n_quarantined": len(quarantine),
        "n_frames": int(index["n_frames"].sum()) if len(index) else 0,
        "n_expression": int(expression.schema.field("expression").type.list_size),
        "expression_source": cfg.expression,
    }
    report = Path(cfg.report_dir)
    write_text(report / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    write_text(report / "checks.json", json.dumps(checks, indent=2) + "\n")
    return metrics


def features_stage(cfg: FeaturesConfig) -> dict:
    """The DVC stage `features`: build the features, then track the run in MLflow."""
    started = time.time()
    metrics = build_features(cfg)
    report = Path(cfg.report_dir)
    log_stage("svp-data", "features",
              {"landmarks": cfg.landmarks, "expression": cfg.expression,
               "crop_size": cfg.crop_size, "whisper": cfg.whisper_checkpoint or "stand-in"},
              metrics, [report / "metrics.json", report / "checks.json"], started=started)
    return metrics
