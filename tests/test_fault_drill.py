"""The fault drill: what a stage promises when a service or the disk goes away.

- a service a variable names that does not answer: the command fails in seconds, in one line
  naming the service, the address and the variable, before it writes anything;
- a real `mlflow server` stopped while a stage trains: the stage fails in one line and keeps its
  checkpoints; after the server returns, a rerun resumes and logs to the same run (one run, one
  model version, each step logged once, the same weights as an uninterrupted run);
- a disk that fills under `features` (a small tmpfs in a mount namespace): one line naming the
  folder and the space needed, the finished clips kept; with room, a rerun writes the same bytes
  as an uninterrupted run.
(Killing a training stage with SIGKILL and resuming to the same weights is
`test_diffusion_stages.test_a_killed_stage_resumes_to_the_same_weights`.)
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file

from components.errors import BAD_INPUT_EXIT_CODE, SERVICE_EXIT_CODE
from tests.conftest import SVP, with_params

MLFLOW = str(Path(SVP).with_name("mlflow"))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def error_lines(run: subprocess.CompletedProcess) -> list[str]:
    return [line for line in run.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("variable, value, command, service", [
    ("MLFLOW_TRACKING_URI", "http://127.0.0.1:{port}", ["data", "validate"],
     "MLflow tracking server"),
    ("MLFLOW_REGISTRY_URI", "http://127.0.0.1:{port}", ["promote"], "MLflow registry server"),
    ("PREFECT_API_URL", "http://127.0.0.1:{port}/api", ["pipeline", "run"], "Prefect API"),
    ("RAY_ADDRESS", "127.0.0.1:{port}", ["train", "stage1"], "Ray cluster"),
])
def test_a_closed_service_port_fails_in_seconds_in_one_line(tmp_path, variable, value, command,
                                                           service):
    address = value.format(port=closed_port())
    started = time.monotonic()
    run = subprocess.run([SVP, *command], cwd=tmp_path, capture_output=True, text=True,
                         env=os.environ | {variable: address}, check=False)
    took = time.monotonic() - started
    assert run.returncode == SERVICE_EXIT_CODE, run.stderr[-2000:]
    assert error_lines(run) == [
        f"error: {service} at {address} (set by {variable}) is not reachable: connection "
        f"refused (waited up to 5 s); start it, or unset {variable} to use the embedded default"]
    assert "Traceback" not in run.stderr
    assert took < 60  # seconds, not MLflow's minutes of retries
    assert not any(tmp_path.iterdir())  # nothing written before the check


class MlflowServer:
    """A real `mlflow server` on a SQLite store, started and stopped at will on one port."""

    def __init__(self, root: Path):
        self.root, self.port = root, closed_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}",
             "--artifacts-destination", str(self.root / "artifacts"), "--host", "127.0.0.1",
             "--port", str(self.port), "--workers", "1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            env=os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})  # no job workers
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise AssertionError("mlflow server did not start in 120 s")

    def stop(self) -> None:
        if self.process is not None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=60)
            self.process = None


@pytest.mark.slow
def test_a_tracking_server_lost_mid_training_resumes_into_the_same_run(trained, tmp_path):
    def elsewhere(params):
        params["train_stage1"].update(out_dir="data/s1_drill",
                                      checkpoint_dir="data/s1_drill_checkpoints",
                                      report_dir="reports/s1_drill")

    path = with_params(trained, "drill.yaml", elsewhere)
    server = MlflowServer(tmp_path)
    server.start()
    env = os.environ | {"MLFLOW_TRACKING_URI": server.uri}
    try:
        stage = subprocess.Popen([SVP, "train", "stage1", "--params", str(path)], cwd=trained,
                                 start_new_session=True, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env=env | {"SVP_STOP_AFTER_CHECKPOINT": "2"})
        _, status = os.waitpid(stage.pid, os.WUNTRACED)  # stopped right after step 2's checkpoint
        assert os.WIFSTOPPED(status)
        server.stop()
        os.killpg(stage.pid, signal.SIGCONT)  # steps 3-4 train; logging them finds no server
        _, stderr = stage.communicate(timeout=600)
        assert stage.returncode == SERVICE_EXIT_CODE, stderr[-3000:]
        (line,) = [x for x in stderr.splitlines() if x.startswith("error:")]
        assert line.startswith(f"error: MLflow tracking server at {server.uri} (set by "
                               "MLFLOW_TRACKING_URI) was lost during the command: ")
        assert "training resumes from its last checkpoint in the same run" in line
        checkpoints = trained / "data/s1_drill_checkpoints"
        assert (checkpoints / "step_0000002/state.json").is_file()
        assert not (checkpoints / "step_0000004").exists()  # logged before it is saved

        server.start()
        resumed = subprocess.run([SVP, "train", "stage1", "--params", str(path)], cwd=trained,
                                 capture_output=True, text=True, env=env, check=False)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        assert "resuming from" in resumed.stderr

        client = MlflowClient(server.uri)
        (experiment,) = [e for e in client.search_experiments()
                         if e.name == "svp-diffusion"]
        runs = client.search_runs([experiment.experiment_id])
        assert [r.info.run_name for r in runs] == ["train_stage1"]  # one run
        losses = client.get_metric_history(runs[0].info.run_id, "loss")
        assert sorted(m.step for m in losses) == [0, 1, 2, 3]  # each step once
        assert len(client.search_model_versions("name='svp-denoiser-stage1'")) == 1
    finally:
        server.stop()
    ours = load_file(trained / "data/s1_drill/diffusion_pytorch_model.safetensors")
    reference = load_file(trained / "data/denoiser_stage1/diffusion_pytorch_model.safetensors")
    for key in reference:
        torch.testing.assert_close(ours[key], reference[key], rtol=0, atol=0)


def in_mount_namespace(script: str, cwd: Path) -> subprocess.CompletedProcess:
    """`script` with its own mounts (as root, or as root of a new user namespace)."""
    unshare = ["unshare", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-m"]
    return subprocess.run([*unshare, "sh", "-c", script], cwd=cwd, capture_output=True,
                          text=True, check=False)


@pytest.mark.slow
def test_a_full_disk_under_features_is_one_line_and_resumes_to_the_same_bytes(project):
    from components.config import FeaturesConfig

    done = project / "data/features"  # the uninterrupted run (the `project` fixture's)
    manifest = project / "validated/manifest.parquet"
    drill = FeaturesConfig(manifest=str(manifest), out_dir="data/features_drill",
                           report_dir="reports/features_drill")
    path = with_params(project, "disk.yaml", lambda p: p.update(features=asdict(drill)))
    full = sum(f.stat().st_size for f in done.rglob("*") if f.is_file())
    small = max(64 * 1024, full // 2 // 4096 * 4096)  # room for about half the clips
    script = f"""
        set -u
        mkdir -p data/features_drill data/features_kept
        mount -t tmpfs -o size={small} tmpfs data/features_drill
        {SVP} data features --params {path} > first.out 2> first.err; echo $? > first.rc
        ls data/features_drill/clips | wc -l > first.clips
        mount -o remount,size=512m data/features_drill
        {SVP} data features --params {path} > second.out 2> second.err; echo $? > second.rc
        cp -a data/features_drill/. data/features_kept/
    """
    run = in_mount_namespace(script, project)
    assert run.returncode == 0, run.stderr[-2000:]
    first_err = (project / "first.err").read_text()
    assert int((project / "first.rc").read_text()) == BAD_INPUT_EXIT_CODE, first_err[-3000:]
    (line,) = [x for x in first_err.splitlines() if x.startswith("error:")]
    assert line.startswith(f"error: {project / 'data/features_drill'}: no space left on the "
                           "device (")
    assert " MiB needed); free some space and rerun: " in line and " clips are done" in line
    assert "Traceback" not in first_err
    kept_after_failure = int((project / "first.clips").read_text())
    assert 0 < kept_after_failure < len(list((done / "clips").iterdir()))
    assert int((project / "second.rc").read_text()) == 0, (project / "second.err").read_text()
    kept = project / "data/features_kept"
    assert not list(kept.rglob(".*tmp*"))  # no partial file left behind
    names = sorted(f.relative_to(done).as_posix() for f in done.rglob("*") if f.is_file())
    assert names == sorted(f.relative_to(kept).as_posix() for f in kept.rglob("*")
                           if f.is_file())
    for name in names:
        if name != "config.json":  # the recipe names its own out_dir
            assert (kept / name).read_bytes() == (done / name).read_bytes(), name
    assert json.loads((kept / "config.json").read_text())["out_dir"] == "data/features_drill"
    assert yaml.safe_load(path.read_text())["features"]["out_dir"] == "data/features_drill"
