"""The one training loop of the three denoiser stages (the recipe says what trains and what a
sample is), run by Ray Train on every worker through the shared training layer.

Per step: B samples drawn from (seed, step, rank); each sample's conditions dropped together
with `uncond_probability` (classifier-free guidance); a timestep and noise per sample; the loss is
the min-SNR-weighted MSE between the denoiser's prediction and the schedule's target (velocity).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.training_utils import EMAModel
from safetensors.torch import load_file
from torch import Tensor, nn

from components.config import DiffusionConfig, TrainDenoiserConfig
from components.diffusion.frames import load_clips
from components.diffusion.models.denoiser import Denoiser
from components.diffusion.models.schedule import snr_weights, training_scheduler, training_target
from components.diffusion.train.recipes import batch_of, pick_sample, set_trainable
from components.precision import autocast, use_bf16
from components.tracking import StageRun
from components.training import ray_fit
from components.training.checkpoint import latest_checkpoint, load_checkpoint
from components.training.loop import LoopSettings, resume, run_steps
from components.training.registry import load_pretrained
from components.training.run_tracking import RankZeroMetrics

STYLES = "style_priors.safetensors"  # stage 3: the prior of every training clip (stage.py)
PATHS = ("latents_dir", "features_dir", "vae_dir", "init_dir", "out_dir", "checkpoint_dir",
         "report_dir")


class DenoisingObjective(nn.Module):
    """One forward for DDP: the ReferenceNet on the reference latents (with gradients only in
    stage 1, where it trains), then the denoiser."""

    def __init__(self, denoiser: Denoiser, reference_trains: bool):
        super().__init__()
        self.denoiser, self.reference_trains = denoiser, reference_trains

    def forward(self, noisy: Tensor, timesteps: Tensor, reference: Tensor, kps: Tensor,
                audio: Tensor | None, style: Tensor | None, keep: Tensor) -> Tensor:
        with torch.set_grad_enabled(self.reference_trains and torch.is_grad_enabled()):
            bank = self.denoiser.encode_reference(reference)
        return self.denoiser(noisy, timesteps, bank, kps, audio, style, keep)


def initial_denoiser(cfg: TrainDenoiserConfig, diffusion: DiffusionConfig) -> Denoiser:
    """Stage 1: a new denoiser (SD's UNet when pretrained); later stages: the previous one's."""
    from components.diffusion.models.build import add_motion_modules, new_denoiser

    if cfg.stage == 1:
        fps = json.loads((Path(cfg.features_dir) / "config.json").read_text())["fps"]
        return new_denoiser(diffusion, float(fps))
    denoiser = load_pretrained(Denoiser, cfg.init_dir).train()
    if cfg.stage == 2:
        add_motion_modules(denoiser, diffusion)
    return denoiser


def learning_rate(cfg: TrainDenoiserConfig, images: bool) -> float:
    """Single-frame steps train at `lr`; window steps at `lr` x `window_lr_scale`. In stage 2
    the audio layers learn on the single-frame steps (16 clips per batch) and are only refined
    on the windows: at the full lr, 100 window steps of 2 windows took their learnt effect on the
    mouth loss from 15% back to 3% (measured on the training clips)."""
    return cfg.lr if images else cfg.lr * cfg.window_lr_scale


def motion_parameters(denoiser: Denoiser) -> list[torch.nn.Parameter]:
    return [p for n, p in denoiser.named_parameters() if "motion_modules" in n]


def moving_average(cfg: TrainDenoiserConfig, params: list[nn.Parameter]) -> EMAModel | None:
    """The trained weights' exponential moving average (None with `ema_max_decay` 0). Its
    warm-up keeps the decay short while the stage is short: 0.95 after 100 steps, 0.98 after
    400 at `ema_power` 2/3, so the average follows a few-hundred-step run instead of lagging
    it."""
    if cfg.ema_max_decay == 0:
        return None
    return EMAModel(params, decay=cfg.ema_max_decay, use_ema_warmup=True, power=cfg.ema_power)


def denoising_loss(model: nn.Module, scheduler: SchedulerMixin, batch: dict[str, Tensor | None],
                   keep: Tensor, timesteps: Tensor, noise: Tensor, cfg: TrainDenoiserConfig,
                   bf16: bool) -> Tensor:
    """One batch's loss (`batch_of`'s tensors, on the model's device): the min-SNR-weighted
    MSE between the prediction and the schedule's target, the mouth weighted up."""
    latents = batch["latents"]
    noisy = scheduler.add_noise(latents, noise, timesteps)
    target = training_target(scheduler, latents, noise, timesteps)
    with autocast(bf16, latents.device):
        prediction = model(noisy, timesteps, batch["reference"], batch["kps"], batch["audio"],
                           batch["style"], keep)
    weight = 1 + cfg.mouth_loss_weight * batch["mouth"]
    per_sample = (weight * (prediction.float() - target).pow(2)).mean(dim=(1, 2, 3, 4))
    return (snr_weights(scheduler, timesteps, cfg.snr_gamma) * per_sample).mean()


def apply_gradients(loss: Tensor, optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                    ema: EMAModel | None, without: list[nn.Parameter]) -> None:
    """Backward, gradients of `without` dropped, clipped to norm 1, one AdamW step, the EMA."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    for param in without:
        param.grad = None
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    if ema is not None:
        ema.step(params)


def train_loop(config: dict) -> None:
    """The per-worker function Ray Train runs."""
    import ray.train
    import ray.train.torch

    cfg, diffusion = TrainDenoiserConfig(**config["cfg"]), DiffusionConfig(**config["diffusion"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    clips = load_clips(cfg.latents_dir, cfg.features_dir, "train")
    pools = [list(range(len(clips)))]  # sample targets from: the training split, procedural
    if cfg.procedural_share > 0:
        procedural = load_clips(cfg.latents_dir, cfg.features_dir, "procedural")
        pools.append(list(range(len(clips), len(clips) + len(procedural))))
        clips = clips + procedural
    styles = load_file(str(Path(cfg.checkpoint_dir) / STYLES))["priors"].numpy() \
        if cfg.stage == 3 else None
    torch.manual_seed(cfg.seed)
    denoiser = initial_denoiser(cfg, diffusion).to(device)
    if cfg.stage == 2:  # where the audio layers start; a resumed checkpoint holds the same
        denoiser.audio_projection.fit_normaliser(
            torch.from_numpy(np.concatenate([c.audio for c in clips if len(c.audio)])).to(device))
    params = set_trainable(denoiser, cfg.stage)
    if cfg.gradient_checkpointing:
        denoiser.enable_gradient_checkpointing()
    motion = motion_parameters(denoiser)
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = moving_average(cfg, params)
    settings = LoopSettings(f"train_stage{cfg.stage}", cfg.steps, cfg.checkpoint_every,
                            cfg.checkpoint_dir, cfg.seed)
    start, history = resume(settings, denoiser, optimizer, ema)
    model = DenoisingObjective(denoiser, reference_trains=cfg.stage == 1)
    if world > 1:
        model = ray.train.torch.prepare_model(
            model, parallel_strategy_kwargs={"find_unused_parameters": True})
    model.train()
    scheduler = training_scheduler(diffusion.noise)
    bf16 = use_bf16(cfg.bf16, device, f"train_stage{cfg.stage}")

    def step(step: int, random) -> dict[str, float]:
        images = step < cfg.image_steps
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(cfg, images)
        frames, size = (1, cfg.image_batch_size) if images else (cfg.frames(diffusion),
                                                                 cfg.batch_size)
        picks = [pick_sample(cfg.stage, clips, frames, random.numpy,
                             pools[int(len(pools) > 1 and random.numpy.random()
                                       < cfg.procedural_share)], cfg.own_reference_share)
                 for _ in range(size)]
        batch = batch_of(picks, clips, frames, diffusion.resolution, denoiser.audio_frames,
                         styles, with_audio=cfg.stage > 1, rng_torch=random.torch)
        b = len(batch["latents"])
        keep = torch.rand(b, generator=random.torch) >= cfg.uncond_probability
        timesteps = torch.randint(0, scheduler.config.num_train_timesteps, (b,),
                                  generator=random.torch)
        noise = torch.randn(batch["latents"].shape, generator=random.torch)
        batch = {k: None if v is None else v.to(device) for k, v in batch.items()}
        loss = denoising_loss(model, scheduler, batch, keep.to(device), timesteps.to(device),
                              noise.to(device), cfg, bf16)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"stage {cfg.stage}: non-finite loss at step {step}")
        # one frame has no motion to learn: no gradient, so AdamW moves neither the motion
        # modules nor their moments
        apply_gradients(loss, optimizer, params, ema, without=motion if images else [])
        return {"loss": loss.item()}

    metrics = RankZeroMetrics(StageRun(**config["mlflow"]) if config["mlflow"] else None, rank)
    run_steps(settings, denoiser, optimizer, step, start=start, history=history, rank=rank,
              world=world, metrics=metrics, ema=ema)


def fit(cfg: TrainDenoiserConfig, diffusion: DiffusionConfig,
        run: StageRun | None) -> tuple[Denoiser, dict]:
    """Train (or resume) to `cfg.steps`; returns the trained denoiser and the loss history."""
    absolute = {k: str(Path(getattr(cfg, k)).resolve()) for k in PATHS if getattr(cfg, k)}
    ray_fit.fit(train_loop, {"cfg": asdict(cfg) | absolute, "diffusion": asdict(diffusion),
                             "mlflow": run and run.as_dict()},
                name=f"train_stage{cfg.stage}", workers=cfg.workers, use_gpu=cfg.use_gpu,
                storage=Path(absolute["checkpoint_dir"]) / "ray")
    final = latest_checkpoint(absolute["checkpoint_dir"])
    if final is None:
        raise RuntimeError(f"stage {cfg.stage} produced no checkpoint")
    denoiser = initial_denoiser(cfg, diffusion)
    params = set_trainable(denoiser, cfg.stage)
    ema = moving_average(cfg, params)
    state = load_checkpoint(final, denoiser, ema=ema)
    if ema is not None:  # the average is what the stage keeps
        ema.copy_to(params)
    return denoiser.eval(), state["history"]
