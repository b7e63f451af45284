"""Contrastive training of the style extractor, on the shared training layer.

`train_loop` is the per-worker function Ray Train runs (`components.training.ray_fit`): every
step draws its batch and its dropout noise from (seed, step, rank) alone, and checkpoints hold
the weights, the optimiser and RNG state and the step, so a run killed at any point and restarted
ends with the same weights as one that was never interrupted (on CPU).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from components.config import TrainStyleConfig
from components.style.data import check_positives, load_clips, sample_batch
from components.style.extractor import StyleExtractor, sample_style
from components.style.objective import modality_dropout, style_infonce
from components.tracking import StageRun
from components.training import ray_fit
from components.training.checkpoint import latest_checkpoint
from components.training.loop import LoopSettings, resume, run_steps
from components.training.run_tracking import RankZeroMetrics

KEEP_CHECKPOINTS = 2


def model_config(cfg: TrainStyleConfig, expression_dim: int) -> dict:
    return {"expression_dim": expression_dim, "d_model": cfg.d_model, "n_layers": cfg.n_layers,
            "n_heads": cfg.n_heads, "max_frames": cfg.max_frames, "dropout": cfg.dropout}


def model_kwargs(model: StyleExtractor) -> dict:
    return {k: v for k, v in model.config.items() if not k.startswith("_")}


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
    model = StyleExtractor(**model_config(cfg, clips[0].expression.shape[1])).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    settings = LoopSettings("train_style", cfg.steps, cfg.checkpoint_every, cfg.checkpoint_dir,
                            cfg.seed, keep=KEEP_CHECKPOINTS)
    start, history = resume(settings, model, optimizer)
    trained = ray.train.torch.prepare_model(model) if world > 1 else model
    trained.train()

    def step(step: int, random) -> dict[str, float]:
        batch = sample_batch(clips, cfg.groups_per_batch, cfg.windows_per_group, cfg.window,
                             random.numpy)
        keep_exp, keep_audio = modality_dropout(len(batch["group"]), cfg.modality_dropout,
                                                random.torch)
        batch = {k: v.to(device) for k, v in batch.items()}
        mean, logvar = trained(batch["expression"], batch["audio"], batch["valid"],
                               keep_exp.to(device), keep_audio.to(device))
        loss = style_infonce(sample_style(mean, logvar, random.torch), batch["group"],
                             cfg.temperature, cfg.similarity_constant)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"style training: non-finite loss at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": float(loss.detach())}

    metrics = RankZeroMetrics(StageRun(**config["mlflow"]) if config["mlflow"] else None, rank)
    run_steps(settings, model, optimizer, step, start=start, history=history, rank=rank,
              world=world, metrics=metrics, extra={"model_config": model_kwargs(model)})


def fit(cfg: TrainStyleConfig, run: StageRun | None = None) -> Path:
    """Train (or resume) to `cfg.steps`; returns the final checkpoint folder."""
    absolute = {k: str(Path(getattr(cfg, k)).resolve())
                for k in ("features_dir", "out_dir", "checkpoint_dir", "report_dir")}
    ray_fit.fit(train_loop, {"cfg": asdict(cfg) | absolute, "mlflow": run and run.as_dict()},
                name="train_style", workers=cfg.workers, use_gpu=cfg.use_gpu,
                storage=Path(absolute["checkpoint_dir"]) / "ray")
    final = latest_checkpoint(absolute["checkpoint_dir"])
    if final is None:
        raise RuntimeError("style training produced no checkpoint")
    return final
