"""Embedded service defaults, and the one variable that points each at a real server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from components.runtime import OFFLINE_DEFAULTS, apply_offline_defaults
from components.tracking import log_stage


def test_offline_defaults_do_not_override_the_user(monkeypatch):
    monkeypatch.setenv("DO_NOT_TRACK", "false")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    apply_offline_defaults()
    assert os.environ["DO_NOT_TRACK"] == "false"
    assert os.environ["HF_HUB_OFFLINE"] == OFFLINE_DEFAULTS["HF_HUB_OFFLINE"]


@pytest.fixture
def no_tracking_uri(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # restored after the test


def test_mlflow_defaults_to_sqlite_and_a_local_artifact_folder(tmp_path, no_tracking_uri):
    report = tmp_path / "report.html"
    report.write_text("<p>ok</p>")
    run_id = log_stage("svp-test", "validate", {"a": 1}, {"n": 3}, [report], root=tmp_path).run_id
    client = MlflowClient(f"sqlite:///{tmp_path / '.svp/mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.metrics == {"n": 3.0} and run.data.params == {"a": "1"}
    artifacts = Path(run.info.artifact_uri.removeprefix("file://"))
    assert artifacts.is_relative_to(tmp_path / ".svp/mlartifacts")
    assert (artifacts / "report.html").read_text() == "<p>ok</p>"


def test_mlflow_tracking_uri_is_honoured(tmp_path, monkeypatch):
    elsewhere = tmp_path / "server.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{elsewhere}")
    run_id = log_stage("svp-test", "validate", {}, {"n": 1}, [], root=tmp_path / "proj").run_id
    assert MlflowClient(f"sqlite:///{elsewhere}").get_run(run_id).data.metrics == {"n": 1.0}
    assert not (tmp_path / "proj" / ".svp").exists()


def test_every_command_has_help():
    svp = Path(sys.executable).with_name("svp")
    for args in ([], ["data"], ["pipeline"], ["data", "synth"], ["data", "ingest"],
                 ["data", "validate"], ["pipeline", "run"], ["pipeline", "serve"],
                 ["pipeline", "stages"]):
        run = subprocess.run([str(svp), *args, "--help"], capture_output=True, text=True,
                             check=False)
        assert run.returncode == 0 and "Usage" in run.stdout, (args, run.stderr)


def test_validate_stage_logs_to_mlflow(tiny_dataset, tmp_path, no_tracking_uri):
    import yaml

    params = {"ingest": {"source": str(tiny_dataset), "manifest": "m.parquet"},
              "validate": {"manifest": "m.parquet", "out_dir": "v", "report_dir": "r"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    svp = str(Path(sys.executable).with_name("svp"))
    for stage in ("ingest", "validate"):
        subprocess.run([svp, "data", stage], cwd=tmp_path, check=True, capture_output=True)
    client = MlflowClient(f"sqlite:///{tmp_path / '.svp/mlflow.db'}")
    experiment = client.get_experiment_by_name("svp-data")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`svp.stage` = 'validate'")
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert run.data.metrics["n_passed"] == metrics["n_passed"] == 9
    assert run.data.tags["svp.stage"] == "validate"
