"""The declared pipeline end to end: `dvc repro` in a real git repo, the Prefect flow over DVC's
DAG, the local DVC remote, and a cron deployment."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from components.dvc_pipeline import stage_order
from components.errors import BAD_INPUT_EXIT_CODE, SvpError
from tests.conftest import DIFFUSION, STAGE, TINY_EVALUATION, TINY_PROMOTE_COMPARE

PROJECT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def sh(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    bin_dir = str(Path(sys.executable).parent)
    env = {**__import__("os").environ}
    env["PATH"] = bin_dir + ":" + env["PATH"]
    run = subprocess.run(list(args), cwd=cwd, capture_output=True, text=True, env=env,
                         check=False)
    assert run.returncode == 0, f"{args}: {run.stdout}\n{run.stderr}"
    return run


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A copy of the project in a fresh git repo, with a tiny dataset in params.yaml."""
    root = tmp_path_factory.mktemp("project")
    for name in ("dvc.yaml", ".dvcignore", ".gitignore"):
        shutil.copy(PROJECT / name, root / name)
    shutil.copytree(PROJECT / ".dvc", root / ".dvc", ignore=shutil.ignore_patterns(
        "tmp", "cache", "config.local"))
    shutil.copytree(PROJECT / "components", root / "components",
                    ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["synth"].update(n_identities=3, emotions=["happy", "neutral", "sad"], levels=[3],
                           n_sentences=2)
    params["ingest"]["split"]["n_test_identities"] = 1
    params["train_style"].update(steps=20, checkpoint_every=10, d_model=32, n_layers=1,
                                 groups_per_batch=4, windows_per_group=3, window=32)
    params["train_syncnet"].update(steps=10, batch_size=8, checkpoint_every=5, face_size=56,
                                   eval_window=24)
    params["diffusion"] = DIFFUSION
    params["train_vae"].update(steps=4, batch_size=4, checkpoint_every=2, procedural_faces=8,
                               eval_frames=8)
    params["latents"].update(procedural_identities=2, procedural_frames=2, batch_size=16)
    for n in (1, 2, 3):
        params[f"train_stage{n}"].update(STAGE, steps=2, image_steps=0)
    params["evaluate"].update(TINY_EVALUATION)
    params["promote"]["compare"] = TINY_PROMOTE_COMPARE
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid"]
    sh("git", "init", "-q", cwd=root)
    sh("git", "add", "-A", cwd=root)
    sh(*git, "commit", "-qm", "project", cwd=root)
    return root


STAGES = ["synth", "ingest", "validate", "features", "train_vae", "latents", "train_stage1",
          "train_style", "train_stage2", "train_stage3", "train_syncnet", "assemble", "evaluate",
          "promote"]  # DVC's order


def test_stage_order_comes_from_dvc(project):
    assert stage_order(project) == STAGES


def test_flow_runs_dvc_stages_then_dvc_repro_is_a_noop(project, prefect_harness):
    from flows.pipeline import svp_pipeline

    assert svp_pipeline(root=str(project)) == STAGES
    assert len(list((project / "data/synth").rglob("*.mp4"))) == 18
    assert (project / "data/validated/manifest.parquet").exists()
    assert (project / "reports/validate/report.html").exists()
    assert len(list((project / "data/features/clips").glob("*.parquet"))) == 18
    lock = (project / "dvc.lock").read_text()

    repro = sh("dvc", "repro", cwd=project)
    assert "up to date" in repro.stdout and "Running stage" not in repro.stdout
    assert (project / "dvc.lock").read_text() == lock
    assert svp_pipeline(root=str(project)) == []  # the flow skips unchanged stages too
    client = MlflowClient(f"sqlite:///{project / '.svp/mlflow.db'}")
    for name in ("svp-style-extractor", "svp-vae", "svp-denoiser-stage1", "svp-denoiser-stage2",
                 "svp-denoiser-stage3", "svp-generator"):
        assert len(client.search_model_versions(f"name='{name}'")) == 1  # not again
    experiments = [e.experiment_id for e in client.search_experiments()]
    tracked = [r.data.tags["svp.stage"] for r in client.search_runs(experiments)]
    assert sorted(tracked) == sorted(STAGES)
    assert (project / "reports/style/clustering.json").exists()
    assert str(client.get_model_version_by_alias("svp-generator", "champion").version) == "1"

    # a changed param reruns only the stages that read it
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["validate"]["min_frames"] = 9
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert svp_pipeline(root=str(project)) == ["validate"]



def test_the_data_folder_travels_to_another_checkout(project, tmp_path):
    """`data/` moved into another checkout: its manifests and feature index still resolve, and
    `train_style` runs there (paths are stored relative to the project or the dataset)."""
    import pyarrow.parquet as pq

    from components.paths import with_absolute_media

    other = tmp_path / "other"
    shutil.copytree(project, other, ignore=shutil.ignore_patterns("data", ".svp", ".git"))
    shutil.copytree(project / "data", other / "data")
    away = project.with_name(project.name + "-away")
    project.rename(away)  # nothing may still point into the original checkout
    try:
        sh("svp", "train", "style", cwd=other)
        sh("svp", "data", "features", cwd=other)
        rows = pq.read_table(other / "data/validated/manifest.parquet").to_pylist()
        assert not any(Path(row["video_path"]).is_absolute() for row in rows)
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(other)
            media = [with_absolute_media(row) for row in rows]
        assert all(Path(m[k]).is_file() for m in media for k in ("video_path", "audio_path"))
    finally:
        away.rename(project)
    client = MlflowClient(f"sqlite:///{other / '.svp/mlflow.db'}")
    (version,) = client.search_model_versions("name='svp-style-extractor'")
    assert client.get_run(version.run_id).data.tags["svp.stage"] == "train_style"

def test_a_stage_failing_on_bad_data_stops_the_run_without_retry_or_traceback(project):
    """Through the CLI, as a user runs it: one-line error, no Python traceback, no retry of a
    stage that failed on its data (pipeline.retries is 1)."""
    params_path = project / "params.yaml"
    original = params_path.read_text()
    params = yaml.safe_load(original)
    params["validate"]["min_frames"] = 500  # every clip is shorter: all quarantined
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        svp = str(Path(sys.executable).with_name("svp"))
        run = subprocess.run([svp, "pipeline", "run"], cwd=project, capture_output=True,
                             text=True, check=False)
    finally:
        params_path.write_text(original)
    output = run.stdout + run.stderr
    assert run.returncode == BAD_INPUT_EXIT_CODE
    errors = [line for line in run.stderr.splitlines() if line.startswith("error: ")]
    assert errors[0].startswith("error: validation failed: 18 of 18 samples quarantined")
    assert errors[1:] == ["error: stage 'validate' failed: failed to run: svp data validate, "
                          "exited with 3"]
    assert "Traceback" not in output and "Retry 1/1" not in output


def test_local_remote_push_pull_round_trip(project, prefect_harness):
    from flows.pipeline import svp_pipeline

    svp_pipeline(root=str(project))
    manifest = project / "data/validated/manifest.parquet"
    before = digest(manifest)
    sh("dvc", "push", cwd=project)
    assert any((project / ".dvc-remote").rglob("*"))
    for out in ("data/synth", "data/manifest", "data/validated", "data/features", "data/style",
                "data/style_checkpoints", ".dvc/cache"):
        shutil.rmtree(project / out)
    sh("dvc", "pull", cwd=project)
    assert digest(manifest) == before
    assert len(list((project / "data/synth").rglob("*.mp4"))) == 18
    status = sh("dvc", "status", cwd=project)
    assert "up to date" in status.stdout


def test_cron_deployment(project, prefect_harness):
    from prefect.client.orchestration import get_client

    from flows.pipeline import make_deployment

    deployment_id = make_deployment(project, "0 3 * * *", name="nightly").apply()
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(deployment_id)
    assert deployment.name == "nightly"
    assert deployment.parameters == {"root": str(project)}
    assert [s.schedule.cron for s in deployment.schedules] == ["0 3 * * *"]
    with pytest.raises(SvpError, match="not a valid cron"):
        make_deployment(project, "every tuesday")
