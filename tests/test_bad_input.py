"""Broken media is quarantined with a one-line reason naming the file; good samples survive."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from components.config import IngestConfig, SplitConfig, ValidateConfig
from components.errors import BAD_INPUT_EXIT_CODE, SvpError
from components.ingest import ingest
from components.synth.speech import write_wav
from components.validate import enforce_threshold, validate
from tests.conftest import ffmpeg


def ingest_and_validate(source: Path, tmp_path: Path, **validate_overrides):
    manifest = tmp_path / "manifest.parquet"
    ingest(IngestConfig(source=str(source), manifest=str(manifest),
                        probe_cache=str(tmp_path / "probes.jsonl"),
                        split=SplitConfig(n_test_identities=0)))
    cfg = ValidateConfig(manifest=str(manifest), out_dir=str(tmp_path / "validated"),
                         report_dir=str(tmp_path / "report"), **validate_overrides)
    metrics = validate(cfg)
    passed = pq.read_table(tmp_path / "validated" / "manifest.parquet").to_pandas()
    quarantined = pq.read_table(tmp_path / "validated" / "quarantine.parquet").to_pandas()
    return cfg, metrics, passed, quarantined


def reason_for(quarantined, name: str) -> str:
    rows = quarantined[quarantined["video_path"].str.endswith(name)
                       | quarantined["audio_path"].str.endswith(name)]
    assert len(rows) == 1, f"{name} not quarantined exactly once"
    return rows["reasons"].iloc[0]


@pytest.fixture
def broken_mead(tiny_dataset, tmp_path) -> Path:
    root = tmp_path / "mead"
    shutil.copytree(tiny_dataset, root)
    ids = sorted(p.name for p in root.iterdir() if p.is_dir())
    video = lambda i, e: root / ids[i] / "video/front" / e / "level_3/001.mp4"  # noqa: E731
    audio = lambda i, e: root / ids[i] / "audio" / e / "level_3/001.wav"  # noqa: E731
    data = video(0, "happy").read_bytes()
    video(0, "happy").write_bytes(data[: len(data) * 6 // 10])  # truncated
    write_wav(audio(1, "happy"), np.zeros(16000 * 3, np.float32), 16000)  # silent
    good = tmp_path / "good.wav"
    shutil.copy(audio(1, "sad"), good)
    ffmpeg("-i", str(good), "-ar", "8000", str(audio(1, "sad")))  # 8 kHz
    ffmpeg("-i", str(audio(2, "happy")), "-ac", "2", str(tmp_path / "stereo.wav"))
    shutil.copy(tmp_path / "stereo.wav", audio(2, "happy"))  # stereo
    video(2, "sad").write_bytes(b"")  # zero bytes
    short = video(2, "sad").with_name("002.mp4")
    ffmpeg("-i", str(video(2, "happy")), "-frames:v", "5", "-an", str(short))  # 5 frames
    ffmpeg("-i", str(good), "-t", "0.2", str(audio(2, "sad").with_name("002.wav")))
    return root


def test_mead_tree_with_broken_media(broken_mead, tmp_path):
    _, metrics, passed, quarantined = ingest_and_validate(broken_mead, tmp_path,
                                                          max_failing_share=0.7)
    assert metrics["n_samples"] == 10 and metrics["n_quarantined"] == 6
    assert sorted(passed["emotion"]) == ["neutral", "neutral", "neutral", "sad"]
    happy_truncated = str(sorted(broken_mead.glob("*/video/front/happy/*/001.mp4"))[0])
    assert "truncated" in reason_for(quarantined, happy_truncated.split("mead/")[1]) or \
        "unreadable" in reason_for(quarantined, happy_truncated.split("mead/")[1])
    ids = sorted(p.name for p in broken_mead.iterdir() if p.is_dir())
    assert "silent" in reason_for(quarantined, f"{ids[1]}/audio/happy/level_3/001.wav")
    assert "8000 Hz below 16000" in reason_for(quarantined, f"{ids[1]}/audio/sad/level_3/001.wav")
    assert "2 channels" in reason_for(quarantined, f"{ids[2]}/audio/happy/level_3/001.wav")
    assert "0 bytes" in reason_for(quarantined, f"{ids[2]}/video/front/sad/level_3/001.mp4")
    assert "only 5 frames" in reason_for(quarantined, f"{ids[2]}/video/front/sad/level_3/002.mp4")
    for reasons in quarantined["reasons"]:
        assert "\n" not in reasons
    report = (tmp_path / "report" / "report.html").read_text()
    assert "quarantined" in report.lower() and "002.mp4" in report
    # the failing share (60%) passes the default threshold (20%): the stage must fail, after
    # writing its outputs
    with pytest.raises(SvpError, match=r"6 of 10 samples quarantined"):
        enforce_threshold(metrics, ValidateConfig())
    assert all(p.exists() for p in broken_mead.rglob("*"))  # nothing was deleted


def test_hdtf_folder_with_awkward_names_and_broken_files(tiny_dataset, tmp_path):
    flat = tmp_path / "hdtf"
    flat.mkdir()
    sources = sorted(tiny_dataset.glob("*/video/front/*/*/*.mp4"))
    awkward = ["with spaces in name.mp4", "it's a \"quoted\" clip.mp4", "-leading-dash.mp4",
               "ünïcødé clip.MP4"]
    for name, src in zip(awkward, sources, strict=False):
        shutil.copy(src, flat / name)
    ffmpeg("-i", str(sources[5]), "-an", "-c:v", "copy", str(flat / "no audio.mp4"))
    (flat / "empty.mp4").write_bytes(b"")
    (flat / "notes.mp4").write_text("this is not a video\n")
    _, metrics, passed, quarantined = ingest_and_validate(flat, tmp_path, max_failing_share=0.5)
    assert sorted(Path(p).name for p in passed["video_path"]) == sorted(awkward)
    assert "no audio stream" in reason_for(quarantined, "no audio.mp4")
    assert "0 bytes" in reason_for(quarantined, "empty.mp4")
    assert "unreadable" in reason_for(quarantined, "notes.mp4")
    assert metrics["n_quarantined"] == 3


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    svp = Path(sys.executable).with_name("svp")
    return subprocess.run([str(svp), *args], cwd=cwd, capture_output=True, text=True,
                          check=False)


def test_cli_errors_are_one_line(broken_mead, tmp_path):
    params = {"ingest": {"source": str(broken_mead), "manifest": "m.parquet",
                         "split": {"n_test_identities": 0}},
              "validate": {"manifest": "m.parquet", "out_dir": "v", "report_dir": "r"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    ingest_run = run_cli("data", "ingest", cwd=tmp_path)
    assert ingest_run.returncode == 0, ingest_run.stderr
    failed = run_cli("data", "validate", cwd=tmp_path)
    assert failed.returncode == BAD_INPUT_EXIT_CODE
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert last.startswith("error: validation failed: 6 of 10 samples quarantined")
    assert (tmp_path / "r" / "report.html").exists()
    assert "quarantined" in failed.stderr and "002.mp4" in failed.stderr

    missing = run_cli("data", "ingest", "--source", str(tmp_path / "no such dir"), cwd=tmp_path)
    assert missing.returncode == BAD_INPUT_EXIT_CODE and "Traceback" not in missing.stderr
    assert missing.stderr.strip() == f"error: {tmp_path / 'no such dir'}: dataset folder not found"

    (tmp_path / "bad.yaml").write_text("ingest:\n  sorce: x\n")
    bad = run_cli("data", "ingest", "--params", "bad.yaml", cwd=tmp_path)
    assert bad.returncode == BAD_INPUT_EXIT_CODE
    assert bad.stderr.strip() == "error: bad.yaml: ingest.sorce: unknown key"


def test_layout_mistakes_duplicates_and_dangling_links_are_named(tiny_dataset, tmp_path, caplog):
    """A MEAD tree with an unknown emotion, a badly named level folder, a clip copied into
    another identity (a leak across the split) and dangling links: each sample is quarantined
    with its reason, ingest warns naming the file, and the rest pass."""
    import logging
    import os

    tree = tmp_path / "mead"
    shutil.copytree(tiny_dataset, tree)
    happy = tree / "M002/video/front/happy/level_3/001.mp4"
    for folder in ("bored/level_3", "happy/lvl2"):
        (tree / "M002/video/front" / folder).mkdir(parents=True)
        shutil.copy(happy, tree / "M002/video/front" / folder / "001.mp4")
    shutil.copy(happy, tree / "W003/video/front/happy/level_3/002.mp4")  # W003 is held out
    shutil.copy(tree / "M002/audio/happy/level_3/001.wav",
                tree / "W003/audio/happy/level_3/002.wav")
    os.symlink(tmp_path / "gone.mp4", tree / "W001/video/front/sad/level_3/009.mp4")
    (tree / "W001/video/front/sad/level_3/010.mp4").symlink_to(happy)
    os.symlink(tmp_path / "gone.wav", tree / "W001/audio/sad/level_3/010.wav")

    manifest = tmp_path / "manifest.parquet"
    with caplog.at_level(logging.WARNING, logger="components.ingest"):
        ingest(IngestConfig(source=str(tree), manifest=str(manifest),
                            probe_cache=str(tmp_path / "probes.jsonl"),
                            split=SplitConfig(test_identities=["W003"])))
    cfg = ValidateConfig(manifest=str(manifest), out_dir=str(tmp_path / "validated"),
                         report_dir=str(tmp_path / "report"), max_failing_share=0.5)
    validate(cfg)
    passed = pq.read_table(tmp_path / "validated" / "manifest.parquet").to_pandas()
    quarantined = pq.read_table(tmp_path / "validated" / "quarantine.parquet").to_pandas()
    reasons = dict(zip(quarantined["sample_id"], quarantined["reasons"], strict=True))

    assert reasons["M002_bored_level_3_001"].startswith(
        "emotion folder 'bored' is not one of MEAD's eight (angry, contempt")
    assert "level folder 'lvl2' is not level_<n>" in reasons["M002_happy_lvl2_001"]
    assert reasons["W003_happy_level_3_002"] == (
        f"same bytes as M002_happy_level_3_001 ({happy}) — across the train/test split")
    assert reasons["W001_sad_level_3_009"] == (
        f"video: dangling symbolic link to {tmp_path / 'gone.mp4'}")
    assert (f"audio file {tree / 'W001/audio/sad/level_3/010.wav'} is a dangling symbolic link"
            in reasons["W001_sad_level_3_010"])
    assert len(passed) == 9 and "M002_happy_level_3_001" in set(passed["sample_id"])
    for name in ("bored/level_3/001.mp4", "happy/lvl2/001.mp4", "sad/level_3/009.mp4",
                 "sad/level_3/010.mp4"):
        assert any(name in r.message and r.levelname == "WARNING" for r in caplog.records), name
