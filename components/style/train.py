"""Contrastive training of the style extractor on Ray Train.

`workers: 0` runs Ray Train's local mode in this process (no cluster); `workers: N` runs N Ray
workers with DDP (`RAY_ADDRESS` picks the cluster). Every step draws its batch and its dropout
noise from (seed, step, rank) alone, and checkpoints hold the weights, the optimizer state and
the step, so a run killed at any point and restarted ends with the same weights as one that was
never interrupted (on CPU). Checkpoints are safetensors + a weights-only torch file + JSON: loading
one never unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from components.config import TrainStyleConfig
from components.style.data import check_positives, load_clips, sample_batch
from components.style.extractor import StyleExtractor, StyleExtractorConfig, sample_style
from components.style.objective import modality_dropout, style_infonce

log = logging.getLogger(__name__)
KEEP_CHECKPOINTS = 2


def model_config(cfg: TrainStyleConfig, expression_dim: int) -> StyleExtractorConfig:
    return StyleExtractorConfig(expression_dim=expression_dim, d_model=cfg.d_model,
                                n_layers=cfg.n_layers, n_heads=cfg.n_heads,
                                max_frames=cfg.max_frames, dropout=cfg.dropout)


def latest_checkpoint(root: Path) -> Path | None:
    done = sorted(root.glob("step_*/state.json"))
    return done[-1].parent if done else None


def save_checkpoint(root: Path, step: int, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer, losses: list[float],
                    world_size: int) -> None:
    """Write step_<n>/ atomically (a temp folder renamed), keep the last few."""
    final = root / f"step_{step:07d}"
    tmp = root / f".tmp_step_{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              tmp / "model.safetensors")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, "losses": losses,
                                                "world_size": world_size}))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in sorted(root.glob("step_*"))[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old)


def load_checkpoint(path: Path, model: torch.nn.Module,
                    optimizer: torch.optim.Optimizer) -> tuple[int, list[float]]:
    model.load_state_dict(load_file(path / "model.safetensors"))
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=True))
    state = json.loads((path / "state.json").read_text())
    return state["step"], state["losses"]


def train_loop(config: dict) -> None:
    """The per-worker training function (Ray Train calls it on every worker)."""
    import ray.train
    import ray.train.torch

    cfg = TrainStyleConfig(**config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    clips = load_clips(cfg.features_dir, "train", min_frames=8)
    check_positives(clips)
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    model = StyleExtractor(model_config(cfg, clips[0].expression.shape[1])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    checkpoints = Path(cfg.checkpoint_dir)
    start, losses = 0, []
    if (resume := latest_checkpoint(checkpoints)) is not None:
        start, losses = load_checkpoint(resume, model, optimizer)
        log.info("resuming from %s (step %d)", resume, start)
    model = ray.train.torch.prepare_model(model) if world > 1 else model
    model.train()
    tracking = config.get("mlflow")
    for step in range(start, cfg.steps):
        rng = np.random.default_rng([cfg.seed, step, rank])
        noise = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step * 101 + rank)
        torch.manual_seed(cfg.seed * 7_919 + step * 31 + rank)  # dropout
        batch = sample_batch(clips, cfg.groups_per_batch, cfg.windows_per_group, cfg.window,
                             rng)
        keep_exp, keep_audio = modality_dropout(len(batch["group"]), cfg.modality_dropout, noise)
        batch = {k: v.to(device) for k, v in batch.items()}
        mean, logvar = model(batch["expression"], batch["audio"], batch["valid"],
                             keep_exp.to(device), keep_audio.to(device))
        loss = style_infonce(sample_style(mean, logvar, noise), batch["group"],
                             cfg.temperature, cfg.similarity_constant)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"style training: non-finite loss at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
        if rank == 0 and tracking:
            _log_metric(tracking, "loss", float(loss), step)
        if rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
            inner = model.module if hasattr(model, "module") else model
            save_checkpoint(checkpoints, step + 1, inner, optimizer, losses, world)
            log.info("step %d/%d loss %.4f (checkpoint saved)", step + 1, cfg.steps, float(loss))
        if (step + 1) % cfg.checkpoint_every == 0:
            ray.train.report({"step": step + 1, "loss": float(loss)})


def _log_metric(tracking: dict, key: str, value: float, step: int) -> None:
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking["uri"]).log_metric(tracking["run_id"], key, value, step=step)


def fit(cfg: TrainStyleConfig, mlflow_run: dict | None = None) -> Path:
    """Train (or resume) to `cfg.steps`; returns the final checkpoint folder."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    absolute = {k: str(Path(getattr(cfg, k)).resolve())
                for k in ("features_dir", "out_dir", "checkpoint_dir", "report_dir")}
    cfg_dict = asdict(cfg) | absolute  # Ray workers run elsewhere: absolute paths only
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg_dict, "mlflow": mlflow_run},
        scaling_config=ScalingConfig(num_workers=cfg.workers, use_gpu=cfg.use_gpu),
        run_config=RunConfig(name="train_style",
                             storage_path=str(Path(absolute["checkpoint_dir"]) / "ray")),
    )
    trainer.fit()
    final = latest_checkpoint(Path(absolute["checkpoint_dir"]))
    if final is None:
        raise RuntimeError("style training produced no checkpoint")
    return final
