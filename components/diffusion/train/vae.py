"""`svp train vae` (DVC stage `train_vae`): the latent space the generator works in.

Embedded profile: train the small `AutoencoderKL` of `diffusion.vae` on the training split's face
crops and, for half of every batch, stills of `procedural_faces` procedural identities that appear
nowhere else (six identities alone teach a VAE their palettes: measured, held-out PSNR 16 dB
against 23 dB with the stills). The loss is L1 + MSE reconstruction + `kl_weight` x KL, on the
shared training layer (Ray Train, exact resume, rank-0 MLflow); then `scaling_factor` becomes
1 / the standard deviation of the training latents. Full profile (`diffusion.vae.pretrained`):
adopt SD's VAE as it is. Either way the stage measures the reconstruction PSNR on held-out crops
(the ceiling of every generated frame), writes `out_dir/` (`save_pretrained`),
`report_dir/{metrics.json,reconstructions.png}` and registers `svp-vae`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from torch import nn

from components.atomic import write_text
from components.config import DiffusionConfig, TrainVaeConfig
from components.diffusion.frames import face_crops
from components.diffusion.models.vae import (
    decode,
    encode,
    load_pretrained_vae,
    new_vae,
    to_model_images,
)
from components.diffusion.plots import image_grid
from components.evaluation.metrics import psnr
from components.precision import autocast, use_bf16
from components.registry.parts import register_vae
from components.synth.stills import face_crops as procedural_crops
from components.tracking import StageRun, dvc_out_hash
from components.training import ray_fit
from components.training.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    prepare_checkpoint_dir,
)
from components.training.loop import LoopSettings, resume, run_steps
from components.training.registry import save_pretrained
from components.training.run_tracking import RankZeroMetrics, resumable_run

log = logging.getLogger(__name__)
EXPERIMENT = "svp-diffusion"
STILLS_SEED = 1_000_003  # the procedural stills' identities differ from the dataset's
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "workers", "use_gpu", "out_dir", "report_dir",
                     "model_name", "eval_frames"}


class Reconstruction(nn.Module):
    """One forward for DDP: encode, draw from the posterior with the given noise, decode."""

    def __init__(self, vae: AutoencoderKL):
        super().__init__()
        self.vae = vae

    def forward(self, images: torch.Tensor, noise: torch.Tensor):
        posterior = self.vae.encode(images).latent_dist
        z = posterior.mean + posterior.std * noise
        return self.vae.decode(z).sample, posterior.kl()


def procedural_stills(cfg: TrainVaeConfig) -> np.ndarray:
    """The procedural corpus, cut as the features stage cut the training crops."""
    if not cfg.procedural_faces:
        return np.zeros((0, 1, 1, 3), np.uint8)
    features = json.loads((Path(cfg.features_dir) / "config.json").read_text())
    return procedural_crops(cfg.procedural_faces, cfg.seed + STILLS_SEED,
                            2 * features["crop_size"], features["crop_size"],
                            features["crop_scale"])


def train_loop(config: dict) -> None:
    """The per-worker function Ray Train runs."""
    import ray.train
    import ray.train.torch

    cfg, diffusion = TrainVaeConfig(**config["cfg"]), DiffusionConfig(**config["diffusion"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device() if cfg.use_gpu else torch.device("cpu")
    crops = face_crops(cfg.features_dir, "train")
    stills = procedural_stills(cfg)
    torch.manual_seed(cfg.seed)
    vae = new_vae(diffusion).to(device)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=cfg.lr)
    settings = LoopSettings("train_vae", cfg.steps, cfg.checkpoint_every, cfg.checkpoint_dir,
                            cfg.seed)
    start, history = resume(settings, vae, optimizer)
    model = Reconstruction(vae)
    model = ray.train.torch.prepare_model(model) if world > 1 else model
    model.train()
    bf16 = use_bf16(cfg.bf16, device, "train_vae")
    factor = 2 ** (len(diffusion.vae.block_out_channels) - 1)
    latent_shape = (cfg.batch_size, diffusion.vae.latent_channels,
                    crops.shape[1] // factor, crops.shape[2] // factor)

    def step(step: int, random) -> dict[str, float]:
        n_stills = cfg.batch_size // 2 if len(stills) else 0
        images = np.concatenate([
            crops[np.sort(random.numpy.choice(len(crops), cfg.batch_size - n_stills))],
            stills[np.sort(random.numpy.choice(max(1, len(stills)), n_stills))]])
        images = to_model_images(images, device)
        noise = torch.randn(latent_shape, generator=random.torch).to(device)
        for group in optimizer.param_groups:
            group["lr"] = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup_steps))
        with autocast(bf16, device):
            reconstruction, kl = model(images, noise)
        reconstruction, kl = reconstruction.float(), kl.float()
        l1 = (reconstruction - images).abs().mean()
        mse = (reconstruction - images).pow(2).mean()
        loss = l1 + mse + cfg.kl_weight * kl.mean() / images[0].numel()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), "l1": l1.item()}

    metrics = RankZeroMetrics(StageRun(**config["mlflow"]) if config["mlflow"] else None, rank)
    run_steps(settings, vae, optimizer, step, start=start, history=history, rank=rank,
              world=world, metrics=metrics)


def fit(cfg: TrainVaeConfig, diffusion: DiffusionConfig, run: StageRun):
    absolute = {k: str(Path(getattr(cfg, k)).resolve())
                for k in ("features_dir", "out_dir", "checkpoint_dir", "report_dir")}
    ray_fit.fit(train_loop, {"cfg": asdict(cfg) | absolute, "diffusion": asdict(diffusion),
                             "mlflow": run.as_dict()},
                name="train_vae", workers=cfg.workers, use_gpu=cfg.use_gpu,
                storage=Path(absolute["checkpoint_dir"]) / "ray")
    vae = new_vae(diffusion)
    final = latest_checkpoint(absolute["checkpoint_dir"])
    if final is None:
        raise RuntimeError("VAE training produced no checkpoint")
    state = load_checkpoint(final, vae)
    return vae.eval(), state["history"]


def train_vae(cfg: TrainVaeConfig, diffusion: DiffusionConfig) -> dict:
    recipe = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    features = Path(cfg.features_dir)
    recipe |= {"diffusion.vae": asdict(diffusion.vae), "resolution": diffusion.resolution,
               "features": [hashlib.sha256((features / name).read_bytes()).hexdigest()[:16]
                            for name in ("config.json", "index.parquet")]}
    if prepare_checkpoint_dir(cfg.checkpoint_dir, recipe, cfg.steps):
        log.info("VAE params or features changed; starting over in %s", cfg.checkpoint_dir)
    run = resumable_run(EXPERIMENT, "train_vae", Path(cfg.checkpoint_dir) / "mlflow_run.json",
                        asdict(cfg) | {"diffusion.vae": asdict(diffusion.vae)},
                        {"dvc.features": dvc_out_hash(cfg.features_dir)})
    if diffusion.vae.pretrained:
        vae, history = load_pretrained_vae(diffusion.vae.pretrained), {}
    else:
        vae, history = fit(cfg, diffusion, run)
        sample = face_crops(cfg.features_dir, "train", 512, np.random.default_rng(cfg.seed))
        std = float(encode(vae, sample).std())
        vae.register_to_config(scaling_factor=1.0 / std)
    save_pretrained(vae, cfg.out_dir)

    held_out = face_crops(cfg.features_dir, "test", cfg.eval_frames,
                          np.random.default_rng(cfg.seed))
    reconstructed = decode(vae, encode(vae, held_out))
    report = Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    result = {"reconstruction_psnr": round(float(np.mean(psnr(held_out, reconstructed))), 3),
              "scaling_factor": round(float(vae.config.scaling_factor), 6),
              "n_eval_frames": len(held_out),
              "final_l1": round(history["l1"][-1], 5) if history else None,
              "pretrained": diffusion.vae.pretrained}
    write_text(report / "metrics.json", json.dumps(result, indent=2) + "\n")
    image_grid([held_out[:8], reconstructed[:8]], ["held-out crop", "VAE reconstruction"],
               report / "reconstructions.png")
    run.log_metrics({k: v for k, v in result.items() if isinstance(v, float)})
    run.log_artifacts([report / "metrics.json", report / "reconstructions.png"])
    result["registered_version"] = register_vae(run, Path(cfg.out_dir), cfg.model_name)
    run.finish()
    return result
