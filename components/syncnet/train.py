"""SyncNet's contrastive training on the train split, on the shared training layer (Ray Train,
resumable checkpoints, per-step metrics from rank 0), as the style extractor's."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from components.config import TrainSyncNetConfig
from components.paths import project_root
from components.syncnet.data import load_sync_clips, sample_batch
from components.syncnet.model import SyncNet
from components.syncnet.objective import sync_accuracy, sync_infonce
from components.tracking import StageRun
from components.training import ray_fit
from components.training.checkpoint import latest_checkpoint
from components.training.loop import LoopSettings, resume, run_steps
from components.training.run_tracking import RankZeroMetrics

KEEP_CHECKPOINTS = 2


def model_config(cfg: TrainSyncNetConfig) -> dict:
    return {"face_size": cfg.face_size, "audio_channels": tuple(cfg.audio_channels),
            "face_channels": tuple(cfg.face_channels), "hidden_dim": cfg.hidden_dim,
            "embed_dim": cfg.embed_dim, "face_region": cfg.face_region}


def train_loop(config: dict) -> None:
    """The per-worker training function (Ray Train calls it on every worker)."""
    import ray.train
    import ray.train.torch

    cfg = TrainSyncNetConfig(**config["cfg"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    clips = load_sync_clips(cfg.features_dir, "train", cfg.face_size, cfg.face_region,
                            min_windows=2 * cfg.min_shift + 1, media_root=config["media_root"])
    torch.manual_seed(cfg.seed)
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    model = SyncNet(**model_config(cfg)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    settings = LoopSettings("train_syncnet", cfg.steps, cfg.checkpoint_every, cfg.checkpoint_dir,
                            cfg.seed, keep=KEEP_CHECKPOINTS)
    start, history = resume(settings, model, optimizer)
    trained = ray.train.torch.prepare_model(model) if world > 1 else model
    trained.train()
    module = trained.module if world > 1 else trained

    def step(step: int, random) -> dict[str, float]:
        batch = sample_batch(clips, cfg.batch_size, cfg.negatives, cfg.min_shift, cfg.max_shift,
                             random.numpy)
        batch = {k: v.to(device) for k, v in batch.items()}
        n, k = batch["shifted"].shape[:2]
        face, audio = trained(batch["faces"], batch["audio"])
        shifted = module.forward_audio(batch["shifted"].flatten(0, 1)).view(n, k, -1)
        loss = sync_infonce(face, audio, shifted)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"SyncNet training: non-finite loss at step {step}")
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        face, audio, shifted = face.detach(), audio.detach(), shifted.detach()
        return {"loss": float(loss.detach()), "accuracy": sync_accuracy(face, audio, shifted)}

    metrics = RankZeroMetrics(StageRun(**config["mlflow"]) if config["mlflow"] else None, rank)
    run_steps(settings, model, optimizer, step, start=start, history=history, rank=rank,
              world=world, metrics=metrics, extra={"model_config": model_config(cfg)})


def fit(cfg: TrainSyncNetConfig, run: StageRun | None = None) -> Path:
    """Train (or resume) to `cfg.steps`; returns the final checkpoint folder."""
    absolute = {k: str(Path(getattr(cfg, k)).resolve())
                for k in ("features_dir", "out_dir", "checkpoint_dir", "report_dir")}
    ray_fit.fit(train_loop, {"cfg": asdict(cfg) | absolute, "mlflow": run and run.as_dict(),
                             "media_root": str(project_root())},
                name="train_syncnet", workers=cfg.workers, use_gpu=cfg.use_gpu,
                storage=Path(absolute["checkpoint_dir"]) / "ray")
    final = latest_checkpoint(absolute["checkpoint_dir"])
    if final is None:
        raise RuntimeError("SyncNet training produced no checkpoint")
    return final
