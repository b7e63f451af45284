"""`svp data features` end to end on real clips: outputs, quarantine, kill-and-resume, Ray."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import wave
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from components.config import FeaturesConfig, IngestConfig, SplitConfig, ValidateConfig
from components.features.extract import CLIP_SCHEMA
from components.features.head_kps import head_kps
from components.features.stage import build_features
from components.ingest import ingest
from components.synth.speech import write_wav
from components.validate import validate
from tests.conftest import ffmpeg

SVP = str(Path(sys.executable).with_name("svp"))


def manifest_of(source: Path, tmp: Path, validated: bool = True) -> Path:
    cfg = IngestConfig(source=str(source), manifest=str(tmp / "manifest.parquet"),
                       probe_cache=str(tmp / "probes.jsonl"),
                       split=SplitConfig(test_identities=["W003"]))
    ingest(cfg)
    if not validated:
        return tmp / "manifest.parquet"
    validate(ValidateConfig(manifest=cfg.manifest, out_dir=str(tmp / "validated"),
                            report_dir=str(tmp / "report")))
    return tmp / "validated" / "manifest.parquet"


def config(manifest: Path, out: Path, **overrides) -> FeaturesConfig:
    return FeaturesConfig(manifest=str(manifest), out_dir=str(out / "features"),
                          report_dir=str(out / "reports"), **overrides)


@pytest.fixture(scope="module")
def extracted(tiny_dataset, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    cfg = config(manifest_of(tiny_dataset, tmp), tmp)
    return cfg, build_features(cfg)


def test_features_of_every_clip(extracted):
    cfg, metrics = extracted
    out = Path(cfg.out_dir)
    assert metrics["n_passed"] == 9 and metrics["n_quarantined"] == 0
    index = pq.read_table(out / "index.parquet").to_pandas()
    assert sorted(index["split"].unique()) == ["test", "train"]
    assert set(index.loc[index["split"] == "test", "identity"]) == {"W003"}
    expression = pq.read_table(out / "expression.parquet").to_pandas()
    assert len(expression) == index["n_frames"].sum() == metrics["n_frames"]
    assert not expression.duplicated(["sample_id", "frame"]).any()
    basis = np.load(out / "expression_basis.npz")
    assert list(basis["identities"]) == ["M002", "W001"]  # fitted on training identities only
    for row in index.itertuples():
        table = pq.read_table(out / row.features_path)  # relative to the features folder
        assert table.schema.equals(CLIP_SCHEMA)
        assert table["frame"].to_pylist() == list(range(table.num_rows))
        crop = cv2.imdecode(np.frombuffer(table["crop_jpeg"][0].as_py(), np.uint8), 1)
        assert crop.shape == (64, 64, 3) and crop.mean() > 30
        lm = np.stack(table["landmarks"].to_numpy(zero_copy_only=False)).reshape(-1, 68, 2)
        assert np.isfinite(lm).all() and lm.min() > 0 and lm.max() < 64
        kps = np.stack(table["head_kps"].to_numpy(zero_copy_only=False)).reshape(-1, 8, 2)
        np.testing.assert_allclose(kps, head_kps(lm), atol=1e-4)
        speech = np.stack(table["audio"].to_numpy(zero_copy_only=False))
        assert speech.shape == (table.num_rows, 5 * 2 * 384) and np.isfinite(speech).all()
    checks = (Path(cfg.report_dir) / "checks.json").read_text()
    assert '"success": false' not in checks


def test_faceless_and_silent_clips_are_quarantined(tiny_dataset, tmp_path):
    source = tmp_path / "mead"
    shutil.copytree(tiny_dataset, source)
    faceless = next(source.glob("M002/video/front/happy/*/*.mp4"))
    wav = str(faceless).replace("/video/front/", "/audio/").replace(".mp4", ".wav")
    ffmpeg("-f", "lavfi", "-i", "color=c=0x6080a0:s=128x128:r=25:d=3", "-i", wav,
           "-shortest", "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(faceless))
    Path(str(faceless).replace("/video/front/", "/sidecar/").replace(".mp4", ".npz")).unlink()
    silent = next(source.glob("W001/audio/sad/*/*.wav"))
    write_wav(silent, np.zeros(16000 * 4, np.float32), 16000)
    manifest = manifest_of(source, tmp_path, validated=False)  # features must check on its own
    cfg = config(manifest, tmp_path, landmarks="auto")
    metrics = build_features(cfg)
    assert metrics["n_quarantined"] == 2 and metrics["n_passed"] == 7
    quarantine = pq.read_table(Path(cfg.out_dir) / "quarantine.parquet").to_pandas()
    reasons = dict(zip(quarantine["sample_id"], quarantine["reasons"], strict=True))
    assert reasons["M002_happy_level_3_001"].startswith("no face found in 100% of frames")
    assert reasons["W001_sad_level_3_001"].startswith("audio is silent")
    index = pq.read_table(Path(cfg.out_dir) / "index.parquet").to_pandas()
    assert not set(reasons) & set(index["sample_id"])


def _params_file(cfg: FeaturesConfig, path: Path) -> Path:
    fields = {k: v for k, v in cfg.__dict__.items()}
    path.write_text(yaml.safe_dump({"features": fields}))
    return path


def test_killed_extraction_resumes_to_the_same_result(extracted, tmp_path):
    done_cfg, _ = extracted
    cfg = replace(done_cfg, out_dir=str(tmp_path / "features"),
                  report_dir=str(tmp_path / "reports"))
    params = _params_file(cfg, tmp_path / "params.yaml")
    clips = tmp_path / "features" / "clips"
    run = subprocess.Popen([SVP, "data", "features", "--params", str(params)], cwd=tmp_path,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(list(clips.glob("*.parquet"))) < 2:
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    finished = len(list(clips.glob("*.parquet")))
    assert 2 <= finished < 9, "the kill did not land mid-extraction"
    resumed = subprocess.run([SVP, "data", "features", "--params", str(params)], cwd=tmp_path,
                             capture_output=True, text=True, check=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"9 clips, {9 - finished} to extract" in resumed.stderr
    assert not [p for p in (tmp_path / "features").rglob("*") if ".tmp" in p.name]
    for name in ("index.parquet", "expression.parquet"):
        ours, reference = (pq.read_table(Path(c.out_dir) / name) for c in (cfg, done_cfg))
        assert ours.drop(["features_path"] if name == "index.parquet" else []).equals(
            reference.drop(["features_path"] if name == "index.parquet" else []))
    for path in clips.glob("*.parquet"):
        assert pq.read_table(path).equals(pq.read_table(Path(done_cfg.out_dir) / "clips" /
                                                        path.name))


def test_ray_workers_give_the_same_features(extracted, tmp_path):
    """Ray tasks on a local Ray cluster, started inside a loopback-only network namespace."""
    done_cfg, _ = extracted
    cfg = replace(done_cfg, out_dir=str(tmp_path / "features"),
                  report_dir=str(tmp_path / "reports"))
    params = _params_file(cfg, tmp_path / "params.yaml")
    script = f"ip link set lo up; exec env RAY_ADDRESS=local {SVP} data features --params {params}"
    run = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Started a local Ray instance" in run.stderr
    for name in ("expression.parquet",):
        assert pq.read_table(Path(cfg.out_dir) / name).equals(
            pq.read_table(Path(done_cfg.out_dir) / name))


def test_precomputed_3dmm_coefficients(extracted, tmp_path):
    done_cfg, _ = extracted
    index = pq.read_table(Path(done_cfg.out_dir) / "index.parquet").to_pandas()
    coeffs = tmp_path / "3dmm"
    coeffs.mkdir()
    for row in index.itertuples():
        np.save(coeffs / f"{row.sample_id}.npy", np.full((row.n_frames, 64), 0.5, np.float32))
    cfg = replace(done_cfg, out_dir=str(tmp_path / "features"),
                  report_dir=str(tmp_path / "reports"), expression="3dmm",
                  expression_dir=str(coeffs))
    metrics = build_features(cfg)
    assert metrics["n_expression"] == 64 and metrics["expression_source"] == "3dmm"
    table = pq.read_table(Path(cfg.out_dir) / "expression.parquet")
    assert np.allclose(np.stack(table["expression"].to_numpy(zero_copy_only=False)), 0.5)


def test_changed_params_do_not_reuse_stale_clips(extracted, tmp_path):
    done_cfg, _ = extracted
    shutil.copytree(done_cfg.out_dir, tmp_path / "features")
    cfg = replace(done_cfg, out_dir=str(tmp_path / "features"),
                  report_dir=str(tmp_path / "reports"), crop_size=32)
    build_features(cfg)
    for path in (tmp_path / "features" / "clips").glob("*.parquet"):
        jpeg = pq.read_table(path, columns=["crop_jpeg"])["crop_jpeg"][0].as_py()
        assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), 1).shape == (32, 32, 3)


def test_changed_media_under_the_same_id_is_extracted_again(tiny_dataset, tmp_path):
    """A regenerated dataset keeps its sample ids; features follow the bytes, not the names."""
    source = tmp_path / "mead"
    shutil.copytree(tiny_dataset, source)
    cfg = config(manifest_of(source, tmp_path), tmp_path)
    build_features(cfg)
    clips = tmp_path / "features" / "clips"
    before = {p.name: p.read_bytes() for p in clips.glob("*.parquet")}
    wav = sorted(source.glob("W001/audio/*/level_*/*.wav"))[0]
    with wave.open(str(wav)) as f:
        samples = np.frombuffer(f.readframes(f.getnframes()), np.int16) / 32768
    write_wav(wav, np.roll(samples, 800), 16000)  # the first clip now speaks 50 ms later
    build_features(replace(cfg, manifest=str(manifest_of(source, tmp_path))))
    after = {p.name: p.read_bytes() for p in clips.glob("*.parquet")}
    changed = sorted(name for name in before if after[name] != before[name])
    assert len(changed) == 1 and changed[0].startswith("W001")
