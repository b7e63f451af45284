"""One MLflow run per training stage that survives restarts, logged from rank 0 only.

`resumable_run` keeps the run id in the stage's checkpoint folder: a killed run that resumes
logs into the same MLflow run (looked up in the current tracking store, so a checkpoint folder
moved to another checkout or server starts a new run there). `RankZeroMetrics` buffers per-step
metrics and sends them in one `log_batch` call when the recipe saves a checkpoint, so each step
is logged exactly once even across a kill and resume; other ranks log nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.atomic import write_text
from components.runtime import mlflow_tracking_uri
from components.tracking import StageRun, open_stage_run


def resumable_run(experiment: str, run_name: str, marker: str | Path, params: dict,
                  tags: dict | None = None) -> StageRun:
    """The run recorded in `marker` if it exists in the tracking store, else a new one."""
    marker = Path(marker)
    if marker.exists():
        run = StageRun(mlflow_tracking_uri(), json.loads(marker.read_text())["run_id"])
        if run.exists():
            return run
    run = open_stage_run(experiment, run_name, params, tags)
    write_text(marker, json.dumps({"run_id": run.run_id}))
    return run


class RankZeroMetrics:
    """Per-step metrics from rank 0, held until `flush()` (call it where checkpoints are saved)."""

    def __init__(self, run: StageRun | None, rank: int):
        self.run = run if rank == 0 else None
        self.pending: list[tuple[str, float, int]] = []

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None:
            self.pending += [(k, float(v), step) for k, v in metrics.items()]

    def flush(self) -> None:
        if self.run is not None and self.pending:
            self.run.log_metric_series(self.pending)
        self.pending = []
