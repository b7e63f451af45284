"""MLflow logging with the embedded defaults of `components.runtime`."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_commit(root: str | Path = ".") -> str | None:
    run = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=False)
    return run.stdout.strip() or None


def log_stage_run(experiment: str, run_name: str, params: dict, metrics: dict,
                  artifacts: list[Path], root: str | Path = ".") -> str:
    """One MLflow run holding a stage's params, metrics and files; returns its run id."""
    import mlflow

    from components.runtime import mlflow_artifact_location, mlflow_tracking_uri

    artifact_location = mlflow_artifact_location(root)  # before set_tracking_uri sets the env
    mlflow.set_tracking_uri(mlflow_tracking_uri(root))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=artifact_location)
    mlflow.set_experiment(experiment)
    tags = {"svp.stage": run_name, "git.commit": git_commit(root) or "unknown"}
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics({k: float(v) for k, v in metrics.items()})
        for path in artifacts:
            mlflow.log_artifact(str(path))
    return run.info.run_id
