"""`svp data ingest`: discover samples, probe their media, split by identity, write the manifest.

The manifest (`MANIFEST_SCHEMA`, one row per sample) records what each file really holds; a file
that cannot be read gets its reason in `probe_error` and is quarantined by `validate`, never
dropped here.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from components.atomic import write_parquet
from components.config import IngestConfig, SplitConfig
from components.errors import SvpError
from components.layouts import Sample, dangling, discover
from components.manifest import MANIFEST_SCHEMA
from components.media import content_hash, probe_audio, probe_video
from components.paths import to_stored
from components.progress import pool_map
from components.tracking import log_stage

log = logging.getLogger(__name__)



def probe_sample(sample: Sample) -> dict:
    """One manifest row; media problems land in `probe_error`, they never raise."""
    paths = [sample.video_path] + ([sample.audio_path] if sample.audio_source == "file" else [])
    if dangling(sample.video_path):
        return _unreadable(sample, f"video: dangling symbolic link to "
                                   f"{os.readlink(sample.video_path)}")
    video = probe_video(sample.video_path)
    audio = probe_audio(sample.audio_path)
    problems = [f"video: {video.problem}"] if video.problem else []
    if audio.problem:
        where = "video's audio" if sample.audio_source == "video" else "audio file"
        problems.append(f"{where}: {audio.problem}")
    return {
        "sample_id": sample.sample_id,
        "layout": sample.layout,
        "identity": sample.identity,
        "emotion": sample.emotion,
        "level": sample.level,
        "clip": sample.clip,
        "style_group": sample.style_group,
        "video_path": to_stored(sample.video_path),
        "audio_path": to_stored(sample.audio_path),
        "audio_source": sample.audio_source,
        "sidecar_path": to_stored(sample.sidecar_path) if sample.sidecar_path else None,
        "duration_s": video.duration_s,
        "fps": video.fps,
        "n_frames": video.n_frames,
        "width": video.width,
        "height": video.height,
        "video_codec": video.codec,
        "audio_sample_rate": audio.sample_rate,
        "audio_channels": audio.channels,
        "audio_duration_s": audio.duration_s,
        "audio_dbfs": audio.dbfs,
        "content_hash": content_hash(*paths),
        "probe_error": "; ".join(problems) or None,
        "layout_problem": sample.layout_problem,
    }


def _probe(item: tuple[str, Sample]) -> tuple[str, dict]:
    key, sample = item
    return key, probe_sample(sample)


def _unreadable(sample: Sample, problem: str) -> dict:
    """The row of a sample whose media cannot be opened at all."""
    row = {name: None for name in MANIFEST_SCHEMA.names}
    return row | {
        "sample_id": sample.sample_id, "layout": sample.layout, "identity": sample.identity,
        "emotion": sample.emotion, "level": sample.level, "clip": sample.clip,
        "style_group": sample.style_group, "video_path": to_stored(sample.video_path),
        "audio_path": to_stored(sample.audio_path), "audio_source": sample.audio_source,
        "probe_error": problem, "layout_problem": sample.layout_problem}


PROBE_VERSION = 2  # bump when probe_sample's output changes, to invalidate cached probes


class ProbeCache:
    """Probe results keyed by each sample's files (path, size, mtime), appended as one JSON line
    per finished sample: an interrupted ingest resumes where it stopped, and a rerun re-probes
    only the files that changed. A torn last line (a kill mid-write) is ignored."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.rows: dict[str, dict] = {}
        if self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.rows[entry["key"]] = entry["row"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(sample: Sample) -> str:
        files = sorted({sample.video_path, sample.audio_path})
        stats = [(str(p), st.st_size, st.st_mtime_ns)
                 for p in files for st in [p.lstat() if dangling(p) else p.stat()]]
        return json.dumps([PROBE_VERSION, sample.sample_id, sample.style_group, stats])

    def get(self, key: str) -> dict | None:
        return self.rows.get(key)

    def put(self, key: str, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"key": key, "row": row}) + "\n")
        self.rows[key] = row


def choose_test_identities(identities: list[str], split: SplitConfig) -> set[str]:
    """The held-out identities: the explicit list, else `n_test_identities` drawn with `seed`."""
    if split.test_identities:
        missing = sorted(set(split.test_identities) - set(identities))
        if missing:
            raise SvpError(f"ingest.split.test_identities: {missing} not found in the dataset")
        return set(split.test_identities)
    if split.n_test_identities >= len(identities) and split.n_test_identities:
        raise SvpError(f"ingest.split.n_test_identities={split.n_test_identities} leaves no "
                       f"training identity among {len(identities)}")
    rng = np.random.default_rng(split.seed)
    return set(rng.choice(sorted(identities), size=split.n_test_identities, replace=False))


def ingest(cfg: IngestConfig, source: str | Path | None = None,
           manifest: str | Path | None = None) -> pa.Table:
    """Write the Parquet manifest of every sample under the source folder."""
    layout, samples = discover(source or cfg.source, cfg.layout)
    cache = ProbeCache(cfg.probe_cache)
    keys = [cache.key(s) for s in samples]
    todo = [(k, s) for k, s in zip(keys, samples, strict=True) if cache.get(k) is None]
    log.info("found %d samples (%s layout) under %s; %d to probe, %d known", len(samples),
             layout, source or cfg.source, len(todo), len(samples) - len(todo))
    for key, row in pool_map(_probe, todo, workers=cfg.workers, desc="probe", unit="clips",
                             threads=True):
        cache.put(key, row)
    rows = [dict(cache.get(k)) for k in keys]
    test = choose_test_identities(sorted({r["identity"] for r in rows}), cfg.split)
    for row in rows:
        row["split"] = "test" if row["identity"] in test else "train"
        for problem in (row["probe_error"], row["layout_problem"]):
            if problem:
                log.warning("%s: %s", row["video_path"], problem)
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_parquet(manifest or cfg.manifest, table)
    return table


def ingest_stage(cfg: IngestConfig, source: str | Path | None = None,
                 manifest: str | Path | None = None) -> pa.Table:
    """The DVC stage `ingest`: write the manifest, then track the run in MLflow."""
    started = time.time()
    table = ingest(cfg, source, manifest)
    rows = table.select(["probe_error", "layout_problem", "split"]).to_pylist()
    log_stage("svp-data", "ingest", asdict(cfg) | {"source": str(source or cfg.source)}, {
        "n_samples": len(rows),
        "n_unreadable": sum(r["probe_error"] is not None for r in rows),
        "n_layout_problems": sum(r["layout_problem"] is not None for r in rows),
        "n_test_samples": sum(r["split"] == "test" for r in rows)}, [], started=started)
    return table
