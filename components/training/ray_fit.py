"""Ray Train's `TorchTrainer` with the project's conventions.

`workers: 0` runs the training function in this process (Ray Train's local mode: no cluster, no
network); `workers: N` runs it on N Ray workers with DDP on the cluster `RAY_ADDRESS` names (or
one started here). Ray changes a worker's working directory, so every path in `config` must be
absolute. A worker's `SvpError` (bad input, a bad param) ends the run as the same one-line
`SvpError` local mode gives; any other failure is re-raised as the worker's own exception, with
Ray's report (the worker's traceback) as its cause. With workers, Ray's own log lines (workers,
controller) stay in Ray's session logs (`/tmp/ray/session_latest/logs`) instead of the console.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from components.errors import SvpError


def fit(train_fn: Callable[[dict], None], config: dict, *, name: str, workers: int,
        use_gpu: bool, storage: str | Path) -> None:
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if workers and not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=False,
                 include_dashboard=False)

    trainer = TorchTrainer(
        train_fn, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu),
        run_config=RunConfig(name=name, storage_path=str(Path(storage).resolve())),
    )
    try:
        trainer.fit()
    except Exception as err:
        cause = worker_cause(err)
        if isinstance(cause, SvpError):
            raise SvpError(str(cause)) from None
        if cause is not err:
            raise cause from err
        raise


def worker_cause(err: BaseException) -> BaseException:
    """The exception a training worker raised, dug out of Ray's wrappers (rank 0's first)."""
    seen: set[int] = set()
    while id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, SvpError):
            return err
        failures = getattr(err, "worker_failures", None)
        inner = (failures[min(failures)] if failures else None) \
            or getattr(err, "controller_failure", None) or getattr(err, "_base_exc", None) \
            or getattr(err, "cause", None) or err.__cause__
        if not isinstance(inner, BaseException):
            return err
        err = inner
    return err
