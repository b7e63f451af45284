"""`svp data ingest`: discover samples, probe their media, split by identity, write the manifest.

The manifest (`MANIFEST_SCHEMA`, one row per sample) records what each file really holds; a file
that cannot be read gets its reason in `probe_error` and is quarantined by `validate`, never
dropped here.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
from tqdm import tqdm

from components.atomic import write_parquet
from components.config import IngestConfig, SplitConfig
from components.errors import SvpError
from components.layouts import Sample, discover
from components.media import content_hash, probe_audio, probe_video

log = logging.getLogger(__name__)

MANIFEST_SCHEMA = pa.schema([
    ("sample_id", pa.string()),
    ("layout", pa.string()),
    ("identity", pa.string()),
    ("emotion", pa.string()),
    ("level", pa.int32()),
    ("clip", pa.string()),
    ("style_group", pa.string()),
    ("split", pa.string()),
    ("video_path", pa.string()),
    ("audio_path", pa.string()),
    ("audio_source", pa.string()),
    ("sidecar_path", pa.string()),
    ("duration_s", pa.float64()),
    ("fps", pa.float64()),
    ("n_frames", pa.int32()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("video_codec", pa.string()),
    ("audio_sample_rate", pa.int32()),
    ("audio_channels", pa.int32()),
    ("audio_duration_s", pa.float64()),
    ("audio_dbfs", pa.float64()),
    ("content_hash", pa.string()),
    ("probe_error", pa.string()),
])


def probe_sample(sample: Sample) -> dict:
    """One manifest row; media problems land in `probe_error`, they never raise."""
    video = probe_video(sample.video_path)
    audio = probe_audio(sample.audio_path)
    problems = [f"video: {video.problem}"] if video.problem else []
    if audio.problem:
        where = "video's audio" if sample.audio_source == "video" else "audio file"
        problems.append(f"{where}: {audio.problem}")
    paths = [sample.video_path] + ([sample.audio_path] if sample.audio_source == "file" else [])
    return {
        "sample_id": sample.sample_id,
        "layout": sample.layout,
        "identity": sample.identity,
        "emotion": sample.emotion,
        "level": sample.level,
        "clip": sample.clip,
        "style_group": sample.style_group,
        "video_path": sample.video_path.as_posix(),
        "audio_path": sample.audio_path.as_posix(),
        "audio_source": sample.audio_source,
        "sidecar_path": sample.sidecar_path.as_posix() if sample.sidecar_path else None,
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
    }


PROBE_VERSION = 1  # bump when probe_sample's output changes, to invalidate cached probes


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
        stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
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
    with ThreadPoolExecutor(max_workers=cfg.workers) as pool:
        probed = pool.map(probe_sample, [s for _, s in todo])
        for (key, _), row in tqdm(zip(todo, probed, strict=True), total=len(todo),
                                  desc="probe", unit="clip"):
            cache.put(key, row)
    rows = [dict(cache.get(k)) for k in keys]
    test = choose_test_identities(sorted({r["identity"] for r in rows}), cfg.split)
    for row in rows:
        row["split"] = "test" if row["identity"] in test else "train"
        if row["probe_error"]:
            log.warning("%s: %s", row["video_path"], row["probe_error"])
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    write_parquet(manifest or cfg.manifest, table)
    return table
