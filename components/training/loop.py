"""The step loop a training stage runs on every worker: resume from the newest checkpoint, one
step per (seed, step, rank), per-step metrics from rank 0, a checkpoint every N steps.

The recipe supplies `step_fn(step, random) -> {metric: value}` (forward, backward, optimiser
step); everything that makes a killed run end with the same weights as an uninterrupted one
lives here and in `checkpoint.py` / `seeds.py`.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers.training_utils import EMAModel

from components.progress import progress
from components.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from components.training.run_tracking import RankZeroMetrics
from components.training.seeds import StepRandom, step_random

log = logging.getLogger(__name__)
# Fault drills: with this set to a step, the process stops itself (SIGSTOP) right after that
# step's checkpoint is complete, so a drill can kill it at a known point and resume.
STOP_AFTER = "SVP_STOP_AFTER_CHECKPOINT"


@dataclass(frozen=True)
class LoopSettings:
    name: str  # for the progress lines
    steps: int
    checkpoint_every: int
    checkpoint_dir: str
    seed: int
    keep: int = 2


def resume(settings: LoopSettings, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
           ema: EMAModel | None = None) -> tuple[int, dict[str, list[float]]]:
    """Load the newest checkpoint into `model`, `optimizer` and `ema` (before any DDP
    wrapping); returns the step to start from and the metric history so far."""
    found = latest_checkpoint(settings.checkpoint_dir)
    if found is None:
        return 0, {}
    state = load_checkpoint(found, model, optimizer, ema)
    log.info("resuming from %s (step %d)", found, state["step"])
    return state["step"], state.get("history", {})


def run_steps(settings: LoopSettings, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
              step_fn: Callable[[int, StepRandom], dict[str, float]], *, start: int,
              history: dict[str, list[float]], rank: int, world: int,
              metrics: RankZeroMetrics, extra: dict | None = None,
              ema: EMAModel | None = None) -> dict[str, list[float]]:
    """Steps `start` .. `settings.steps`; `model` is the unwrapped module whose weights are
    checkpointed (with `ema`, the moving average `step_fn` updates). Returns the whole metric
    history."""
    steps = range(start, settings.steps)
    for step in progress(steps, len(steps), settings.name, "steps"):
        values = step_fn(step, step_random(settings.seed, step, rank))
        for key, value in values.items():
            history.setdefault(key, []).append(float(value))
        metrics.log(values, step)
        done = step + 1
        if rank == 0 and (done % settings.checkpoint_every == 0 or done == settings.steps):
            metrics.flush()
            save_checkpoint(Path(settings.checkpoint_dir), done, model, optimizer,
                            world_size=world, extra={**(extra or {}), "history": history},
                            keep=settings.keep, ema=ema)
            log.info("%s: step %d/%d %s (checkpoint saved)", settings.name, done, settings.steps,
                     " ".join(f"{k} {v:.4f}" for k, v in values.items()))
            if os.environ.get(STOP_AFTER) == str(done):  # a fault drill's moment to kill
                os.kill(os.getpid(), signal.SIGSTOP)
    metrics.flush()
    return history
