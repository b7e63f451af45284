"""The style prior: model, objective, data checks, Ray training with resume, registry, metrics."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from components.config import FeaturesConfig, TrainStyleConfig
from components.errors import SvpError
from components.features.stage import build_features
from components.style.data import StyleClip, check_positives, load_clips
from components.style.extractor import StyleExtractor
from components.style.objective import modality_dropout, style_infonce
from components.synth.generate import synthesize_dataset
from tests.conftest import TINY
from tests.test_features_stage import manifest_of

SVP = str(Path(sys.executable).with_name("svp"))
WEIGHTS = "diffusion_pytorch_model.safetensors"  # diffusers' save_pretrained


def test_infonce_matches_a_hand_computation():
    styles = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 3.0], [0.0, 4.0]])
    groups = torch.tensor([0, 0, 1, 1])
    loss = style_infonce(styles, groups, temperature=0.5, constant=1.0)
    sim = 1 / (torch.cdist(styles, styles) + 1.0) / 0.5
    expected = []
    for i in range(4):
        others = [j for j in range(4) if j != i]
        positive = [j for j in others if groups[j] == groups[i]]
        expected.append(-torch.log(sim[i, positive].exp().sum() / sim[i, others].exp().sum()))
    assert torch.isclose(loss, torch.stack(expected).mean())
    with pytest.raises(ValueError, match="no positive"):
        style_infonce(styles, torch.tensor([0, 0, 1, 2]))


def test_modality_dropout_never_drops_both():
    keep_exp, keep_audio = modality_dropout(20000, 0.15, torch.Generator().manual_seed(0))
    assert (keep_exp | keep_audio).all()
    assert abs((~keep_exp).float().mean() - 0.15) < 0.02
    assert abs((~keep_audio).float().mean() - 0.15) < 0.02


def test_extractor_respects_padding_and_dropped_modalities():
    torch.manual_seed(0)
    model = StyleExtractor(expression_dim=6, d_model=16, n_heads=2).eval()
    exp, audio = torch.randn(2, 10, 6), torch.randn(2, 10, 3840)
    valid = torch.ones(2, 10, dtype=torch.bool)
    yes = torch.ones(2, dtype=torch.bool)
    mean, logvar = model(exp, audio, valid, yes, yes)
    assert mean.shape == logvar.shape == (2, 16)
    longer_valid = torch.cat([valid, torch.zeros(2, 5, dtype=torch.bool)], 1)
    padded, _ = model(torch.cat([exp, torch.randn(2, 5, 6)], 1),
                      torch.cat([audio, torch.randn(2, 5, 3840)], 1), longer_valid, yes, yes)
    torch.testing.assert_close(padded, mean, atol=1e-5, rtol=1e-4)  # padding is ignored
    no = torch.zeros(2, dtype=torch.bool)
    a, _ = model(exp, audio, valid, yes, no)
    b, _ = model(exp, torch.randn(2, 10, 3840), valid, yes, no)
    torch.testing.assert_close(a, b)  # a dropped modality has no influence


def test_bad_training_data_is_reported(tmp_path, caplog):
    clip = StyleClip("a", "M001", "happy", 1, "M001/happy", np.zeros((10, 4), np.float32),
                     np.zeros((10, 3840), np.float16))
    with pytest.raises(SvpError, match="at least 2 style groups"):
        check_positives([clip, clip])
    with pytest.raises(SvpError, match="features index not found"):
        load_clips(tmp_path)


@pytest.fixture(scope="module")
def features(tmp_path_factory):
    """Features of 3 identities x 3 emotions x 2 sentences: two clips per emotion cluster."""
    tmp = tmp_path_factory.mktemp("style")
    synthesize_dataset(replace(TINY, n_sentences=2), tmp / "mead")
    cfg = FeaturesConfig(manifest=str(manifest_of(tmp / "mead", tmp)),
                         out_dir=str(tmp / "features"), report_dir=str(tmp / "freport"))
    build_features(cfg)
    return Path(cfg.out_dir)


def test_nan_rows_and_missing_modalities(features, tmp_path, caplog):
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "features"
    shutil.copytree(features, root)
    expression = pq.read_table(root / "expression.parquet").to_pandas()
    index = pq.read_table(root / "index.parquet").to_pandas()
    first, second = index["sample_id"].iloc[0], index["sample_id"].iloc[1]
    nan = np.full(16, np.nan, np.float32)
    spoil = ((expression["sample_id"] == first) & (expression["frame"] < 5)) | (
        expression["sample_id"] == second)
    expression["expression"] = [nan if bad else value for bad, value in
                                zip(spoil, expression["expression"], strict=True)]
    pq.write_table(pa.Table.from_pandas(expression, preserve_index=False),
                   root / "expression.parquet")
    with caplog.at_level(logging.WARNING, logger="components.style.data"):
        clips = {c.sample_id: c for c in load_clips(root)}
    assert first in clips and np.isfinite(clips[first].expression).all()
    n_first = int(index.set_index("sample_id").loc[first, "n_frames"])
    assert len(clips[first].expression) == n_first - 5
    assert second not in clips and f"skipping {second}: a modality is missing" in caplog.text


def style_params(features: Path, tmp: Path, **overrides) -> Path:
    cfg = TrainStyleConfig(features_dir=str(features), out_dir=str(tmp / "style"),
                           checkpoint_dir=str(tmp / "ckpt"), report_dir=str(tmp / "report"),
                           d_model=32, n_layers=1, steps=40, checkpoint_every=10,
                           groups_per_batch=4, windows_per_group=3, window=32, **overrides)
    path = tmp / "params.yaml"
    path.write_text(yaml.safe_dump({"train_style": asdict(cfg)}))
    return path


def run_svp(params: Path, cwd: Path, **env) -> subprocess.CompletedProcess:
    return subprocess.run([SVP, "train", "style", "--params", str(params)], cwd=cwd,
                          capture_output=True, text=True, check=False,
                          env={**os.environ, **env})


@pytest.fixture(scope="module")
def trained(features, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trained")
    run = run_svp(style_params(features, tmp), tmp)
    assert run.returncode == 0, run.stderr[-3000:]
    return tmp


def test_training_registers_and_reports(trained):
    metrics = json.loads((trained / "report" / "clustering.json").read_text())
    assert set(metrics["clustering_strength"]) == {"exp", "audio", "both"}
    assert metrics["test_identities"] == ["W003"]
    assert set(metrics["per_emotion"]["both"]) == {"happy", "neutral", "sad"}
    strength, random_init = metrics["clustering_strength"], metrics["random_init"]
    assert strength["both"] > 1.5 * random_init["both"]  # the learned space is real
    assert strength["both"] > strength["audio"]
    assert (trained / "report" / "tsne.png").stat().st_size > 10_000
    client = MlflowClient(f"sqlite:///{trained / '.svp/mlflow.db'}")
    (version,) = client.search_model_versions("name='svp-style-extractor'")
    run = client.get_run(version.run_id)
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 40
    assert run.data.tags["git.commit"] and "clustering_strength.both" in run.data.metrics
    assert run.data.params["steps"] == "40"


def test_registered_model_loads_without_pickles(trained, monkeypatch):
    """Models-from-code: neither our loader nor MLflow's pyfunc unpickles anything."""
    import pickle

    import cloudpickle
    import mlflow

    from components.style.registry import load_style_extractor

    def refuse(*args, **kwargs):
        raise AssertionError("something tried to unpickle")

    for module in (pickle, cloudpickle):
        for name in ("load", "loads"):
            monkeypatch.setattr(module, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.chdir(trained)
    mlflow.set_tracking_uri(f"sqlite:///{trained / '.svp/mlflow.db'}")
    model = load_style_extractor("models:/svp-style-extractor/1")
    saved = load_file(trained / "style" / WEIGHTS)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    pyfunc = mlflow.pyfunc.load_model("models:/svp-style-extractor/1")
    out = pyfunc.predict({"expression": np.zeros((2, 12, 16), np.float32),
                          "audio": np.zeros((2, 12, 3840), np.float32),
                          "valid": np.ones((2, 12), bool)})
    assert out.shape == (2, 64)
    model_files = {p.name for p in Path(mlflow.artifacts.download_artifacts(
        "models:/svp-style-extractor/1")).rglob("*")}
    assert "python_model.pkl" not in model_files and "pyfunc_model.py" in model_files


def test_sigkill_midway_resumes_to_the_same_weights(features, trained, tmp_path):
    params = style_params(features, tmp_path)
    run = subprocess.Popen([SVP, "train", "style", "--params", str(params)], cwd=tmp_path,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not (tmp_path / "ckpt" / "step_0000010").exists():
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (tmp_path / "ckpt" / "step_0000040").exists()
    resumed = run_svp(params, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr
    ours, reference = (load_file(p / "style" / WEIGHTS) for p in (tmp_path, trained))
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0)


def test_two_ray_workers_with_ddp(features, tmp_path):
    """The same training function on 2 Ray workers (DDP on CPU), in a loopback-only netns."""
    params = style_params(features, tmp_path, workers=2)
    params_data = yaml.safe_load(params.read_text())
    params_data["train_style"]["steps"] = 4
    params_data["train_style"]["checkpoint_every"] = 2
    params.write_text(yaml.safe_dump(params_data))
    script = f"ip link set lo up; exec {SVP} train style --params {params}"
    run = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((tmp_path / "ckpt" / "step_0000004" / "state.json").read_text())
    assert state["world_size"] == 2 and len(state["history"]["loss"]) == 4
    assert (tmp_path / "style" / WEIGHTS).exists()


def test_changed_training_params_start_over(features, tmp_path):
    from components.style.stage import prepare_checkpoints

    cfg = TrainStyleConfig(features_dir=str(features), checkpoint_dir=str(tmp_path / "ckpt"))
    prepare_checkpoints(cfg)
    (tmp_path / "ckpt" / "step_0000010").mkdir()
    prepare_checkpoints(replace(cfg, steps=cfg.steps + 100))  # more steps: keep going
    assert (tmp_path / "ckpt" / "step_0000010").exists()
    prepare_checkpoints(replace(cfg, lr=cfg.lr / 2))  # another run: start over
    assert not (tmp_path / "ckpt" / "step_0000010").exists()


def test_a_bad_input_error_in_a_ray_worker_is_one_line(features, tmp_path):
    """2 Ray workers (loopback-only netns) on features with a single style group: the workers'
    SvpError ends the command as local mode does, one line and exit code 3."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    root = tmp_path / "one_group"
    shutil.copytree(features, root)
    index = pq.read_table(root / "index.parquet").to_pandas()
    group = index.loc[index["split"] == "train", "style_group"].iloc[0]
    keep = index[(index["split"] == "test") | (index["style_group"] == group)]
    pq.write_table(pa.Table.from_pandas(keep, preserve_index=False), root / "index.parquet")
    params = style_params(root, tmp_path, workers=2)
    script = f"ip link set lo up; exec {SVP} train style --params {params}"
    run = subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=tmp_path,
                         capture_output=True, text=True, check=False)
    assert run.returncode == 3, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: style training needs at least 2 style groups, got 1"]
    assert "Traceback" not in run.stderr
