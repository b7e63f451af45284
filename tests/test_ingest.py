"""Discovery in each accepted layout, the manifest's contents and the identity-disjoint split."""

from __future__ import annotations

import os
import shutil

import pyarrow.parquet as pq
import pytest

from components import ingest as ingest_module
from components.config import IngestConfig, SplitConfig
from components.errors import SvpError
from components.ingest import ingest
from components.manifest import MANIFEST_SCHEMA


def run(source, tmp_path, **split):
    cfg = IngestConfig(source=str(source), manifest=str(tmp_path / "m.parquet"),
                       probe_cache=str(tmp_path / "probes.jsonl"), split=SplitConfig(**split))
    table = ingest(cfg)
    assert pq.read_table(tmp_path / "m.parquet").equals(table)
    return table.to_pandas()


def test_mead_tree(tiny_dataset, tmp_path):
    df = run(tiny_dataset, tmp_path, n_test_identities=1, seed=3)
    assert set(df.columns) == set(MANIFEST_SCHEMA.names)
    assert len(df) == 9 and df["probe_error"].isna().all()
    assert (df["layout"] == "mead").all() and (df["audio_source"] == "file").all()
    assert set(df["emotion"]) == {"happy", "neutral", "sad"}
    assert set(df.loc[df["emotion"] == "neutral", "level"]) == {1}
    assert df["sidecar_path"].notna().all()
    assert (df["style_group"] == df["identity"] + "/" + df["emotion"]).all()
    assert (df["fps"] == 25).all() and (df["width"] == 128).all()
    assert (df["audio_sample_rate"] == 16000).all() and (df["audio_channels"] == 1).all()
    assert df["content_hash"].str.len().eq(64).all() and df["content_hash"].is_unique
    # identity-disjoint split: every identity lies wholly on one side
    assert df.groupby("identity")["split"].nunique().eq(1).all()
    assert df.loc[df["split"] == "test", "identity"].nunique() == 1


def test_split_is_seeded_and_explicit_lists_win(tiny_dataset, tmp_path):
    a = run(tiny_dataset, tmp_path, n_test_identities=1, seed=1)
    b = run(tiny_dataset, tmp_path, n_test_identities=1, seed=1)
    assert a["split"].tolist() == b["split"].tolist()
    c = run(tiny_dataset, tmp_path, test_identities=["M002"])
    assert set(c.loc[c["split"] == "test", "identity"]) == {"M002"}
    with pytest.raises(SvpError, match="W999"):
        run(tiny_dataset, tmp_path, test_identities=["W999"])
    with pytest.raises(SvpError, match="leaves no training identity"):
        run(tiny_dataset, tmp_path, n_test_identities=3)


def test_hdtf_folder(tiny_dataset, tmp_path):
    flat = tmp_path / "hdtf"
    flat.mkdir()
    for i, video in enumerate(sorted(tiny_dataset.glob("*/video/front/*/*/*.mp4"))[:4]):
        shutil.copy(video, flat / f"WDA_Speaker{i}_000.mp4")
    df = run(flat, tmp_path, n_test_identities=1)
    assert len(df) == 4 and (df["layout"] == "hdtf").all()
    assert (df["identity"] == df["clip"]).all() and (df["style_group"] == df["clip"]).all()
    assert (df["audio_source"] == "video").all() and (df["audio_path"] == df["video_path"]).all()
    assert df["emotion"].isna().all() and df["probe_error"].isna().all()
    assert (df["audio_sample_rate"] == 16000).all() and (df["audio_dbfs"] > -30).all()


def test_plain_folder(tiny_dataset, tmp_path):
    root = tmp_path / "clips"
    videos = sorted(tiny_dataset.glob("*/video/front/*/*/*.mp4"))
    for person, video in zip(["alice", "alice", "bob"], videos, strict=False):
        (root / person / "day1").mkdir(parents=True, exist_ok=True)
        shutil.copy(video, root / person / "day1" / f"{video.parent.parent.name}.mov")
    shutil.copy(videos[3], root / "loose.mp4")
    df = run(root, tmp_path, n_test_identities=1)
    assert (df["layout"] == "folder").all() and len(df) == 4
    assert sorted(df["identity"]) == ["alice", "alice", "bob", "loose"]
    assert df["sample_id"].is_unique and df["probe_error"].isna().all()


def test_missing_or_empty_source(tmp_path):
    with pytest.raises(SvpError, match="dataset folder not found"):
        ingest(IngestConfig(source=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SvpError, match="no video files"):
        ingest(IngestConfig(source=str(tmp_path / "empty")))


def test_rerun_reprobes_only_changed_files_and_survives_a_torn_cache(tiny_dataset, tmp_path,
                                                                    monkeypatch):
    source = tmp_path / "mead"
    shutil.copytree(tiny_dataset, source)
    first = run(source, tmp_path)
    cache = tmp_path / "probes.jsonl"
    with open(cache, "a") as f:
        f.write('{"key": "torn')  # as if killed mid-write
    probed = []
    real_probe = ingest_module.probe_sample
    monkeypatch.setattr(ingest_module, "probe_sample",
                        lambda s: probed.append(s.sample_id) or real_probe(s))
    again = run(source, tmp_path)
    assert probed == [] and again.equals(first)
    wav = next(source.glob("*/audio/happy/level_3/001.wav"))
    os.utime(wav, ns=(wav.stat().st_atime_ns, wav.stat().st_mtime_ns + 10**9))
    run(source, tmp_path)
    assert len(probed) == 1 and probed[0].endswith("happy_level_3_001")
