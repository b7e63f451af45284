"""The one way a stage tracks itself in MLflow (embedded defaults of `components.runtime`).

Every stage opens its run from its own stage code with `open_stage_run` (or, for training,
`components.training.run_tracking.resumable_run`), tagged with the stage, the git commit and the
DVC hashes of its inputs; params and metrics go in batches. `log_stage` does it all at once for a
stage that has only final numbers and files.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

BATCH = 100  # MLflow's limit of params per log_batch call is 100; metrics 1000


def git_commit(root: str | Path = ".") -> str | None:
    run = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                         text=True, check=False)
    return run.stdout.strip() or None


def dvc_out_hash(path: str | Path, lock: str | Path = "dvc.lock") -> str:
    """The md5 `dvc.lock` records for the stage output at `path` ("unknown" without one)."""
    import yaml

    lock = Path(lock)
    if not lock.is_file():
        return "unknown"
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 0.11 s less a call
    for stage in (yaml.load(lock.read_text(), Loader=loader) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if Path(out["path"]) == Path(path):
                return out.get("md5", "unknown")
    return "unknown"


@dataclass(frozen=True)
class StageRun:
    """An MLflow run by tracking URI and id: plain data, so it can travel to Ray workers."""

    uri: str
    run_id: str

    def as_dict(self) -> dict:
        return asdict(self)

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(self.uri)

    def exists(self) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_run(self.run_id).info.lifecycle_stage == "active"
        except MlflowException as err:
            if err.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise  # a server that does not answer is not a missing run: no duplicate run

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.log_metric_series([(k, float(v), step or 0) for k, v in metrics.items()])

    def log_metric_series(self, values: list[tuple[str, float, int]]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [Metric(key, value, now, step) for key, value, step in values]
        for start in range(0, len(metrics), 10 * BATCH):
            self.client().log_batch(self.run_id, metrics=metrics[start:start + 10 * BATCH])

    def log_artifacts(self, paths: list[str | Path], artifact_path: str | None = None) -> None:
        for path in paths:
            self.client().log_artifact(self.run_id, str(path), artifact_path)

    def finish(self) -> None:
        self.client().set_terminated(self.run_id)

    @contextmanager
    def active(self) -> Iterator[None]:
        """Make this the active run (for APIs that log into it, such as `log_model`)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)
        with mlflow.start_run(run_id=self.run_id):
            yield


def open_stage_run(experiment: str, stage: str, params: dict,
                   tags: dict | None = None, root: str | Path = ".",
                   started: float | None = None) -> StageRun:
    """A new run in `experiment` named after the stage, with its params logged in batches;
    `started` (seconds since the epoch) back-dates its start to when the stage's work began."""
    import mlflow
    from mlflow.entities import Param

    from components.runtime import mlflow_artifact_location, mlflow_tracking_uri

    artifact_location = mlflow_artifact_location(root)
    uri = mlflow_tracking_uri(root)
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = (found.experiment_id if found else
                     client.create_experiment(experiment, artifact_location=artifact_location))
    run = client.create_run(experiment_id, run_name=stage, start_time=None if started is None
                            else int(started * 1000), tags={
        "svp.stage": stage, "git.commit": git_commit(root) or "unknown", **(tags or {})})
    flat = [Param(k, str(v)[:6000]) for k, v in sorted(_flatten(params).items())]
    for start in range(0, len(flat), BATCH):
        client.log_batch(run.info.run_id, params=flat[start:start + BATCH])
    return StageRun(uri, run.info.run_id)


def log_stage(experiment: str, stage: str, params: dict, metrics: dict,
              artifacts: list[str | Path], tags: dict | None = None,
              root: str | Path = ".", started: float | None = None) -> StageRun:
    """One finished run holding a stage's params, final metrics and files, spanning the stage's
    work from `started` (`time.time()` when it began)."""
    run = open_stage_run(experiment, stage, params, tags, root, started)
    run.log_metrics({k: v for k, v in _flatten(metrics).items()
                     if isinstance(v, int | float) and not isinstance(v, bool)})
    run.log_artifacts([p for p in artifacts if Path(p).exists()])
    run.finish()
    return run


def _flatten(values: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= _flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat
