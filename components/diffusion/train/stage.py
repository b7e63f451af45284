"""`svp train stage1|stage2|stage3` (DVC stages `train_stage1..3`): train, check, register.

Outputs per stage: `out_dir/` (the denoiser, `save_pretrained`), `report_dir/metrics.json` (DVC
metrics: what the stage is for, measured on the held-out batch, with the VAE's reconstruction
PSNR as the ceiling), `report_dir/samples.png` (generated frames next to real ones),
`report_dir/loss.tsv` (DVC plot), one MLflow run in `svp-diffusion` with per-step losses and those
files, and a new version of `svp-denoiser-stage<n>`. Checkpoints live in `checkpoint_dir`
(outside DVC, like the style stage's); they are kept only while the params and inputs that shape
the weights stay the same.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from safetensors.torch import save_file

from components.atomic import atomic_path, write_text
from components.config import DiffusionConfig, TrainDenoiserConfig
from components.diffusion.frames import load_clips
from components.diffusion.plots import image_grid
from components.diffusion.style_prior import load_style_model, style_priors
from components.diffusion.train.fit import STYLES, fit
from components.evaluation.metrics import FaceLandmarks
from components.evaluation.stage_checks import Evaluation, evaluate_stage
from components.generation.pipeline import new_pipeline
from components.media import content_hash
from components.precision import use_bf16
from components.registry.parts import register_denoiser
from components.tracking import dvc_out_hash
from components.training.checkpoint import prepare_checkpoint_dir
from components.training.registry import load_pretrained, save_pretrained
from components.training.run_tracking import resumable_run

log = logging.getLogger(__name__)
EXPERIMENT = "svp-diffusion"
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "workers", "use_gpu", "out_dir", "report_dir",
                     "model_name", "eval_samples", "check_quality"}


def _digest(path: str | Path | None) -> str:
    """A short hash of a file, of a folder's safetensors and config files, or of a name."""
    if path is None:
        return "none"
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) + sorted(path.glob("*.json")) \
        if path.is_dir() else [path] if path.is_file() else []
    return content_hash(*files)[:16] if files else str(path)


def prepare_checkpoints(cfg: TrainDenoiserConfig, diffusion: DiffusionConfig) -> None:
    recipe = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    inputs = [Path(cfg.latents_dir) / name for name in ("config.json", "index.parquet")] + \
        [Path(cfg.features_dir) / name for name in ("config.json", "index.parquet")]
    recipe |= {"diffusion": asdict(diffusion), "inputs": [_digest(p) for p in inputs],
               "init": _digest(cfg.init_dir), "style": _digest(cfg.style_model)}
    if prepare_checkpoint_dir(cfg.checkpoint_dir, recipe, cfg.steps):
        log.info("stage %d params or inputs changed; starting over in %s", cfg.stage,
                 cfg.checkpoint_dir)


def write_style_priors(cfg: TrainDenoiserConfig, diffusion: DiffusionConfig,
                       split: str) -> np.ndarray:
    model = load_style_model(cfg.style_model)
    clips = load_clips(cfg.latents_dir, cfg.features_dir, split)
    priors = style_priors(model, cfg.features_dir, [c.sample_id for c in clips],
                          diffusion.style.style_dim)
    if split == "train":
        with atomic_path(Path(cfg.checkpoint_dir) / STYLES) as tmp:
            save_file({"priors": torch.from_numpy(priors)}, str(tmp))
    return priors


def write_loss_plot(history: dict[str, list[float]], path: Path) -> None:
    lines = ["step\tloss"] + [f"{i + 1}\t{v:.6f}" for i, v in enumerate(history["loss"])]
    write_text(path, "\n".join(lines) + "\n")


def train_denoiser(cfg: TrainDenoiserConfig, diffusion: DiffusionConfig) -> dict:
    prepare_checkpoints(cfg, diffusion)
    if cfg.stage == 3:
        write_style_priors(cfg, diffusion, "train")
    run = resumable_run(EXPERIMENT, f"train_stage{cfg.stage}",
                        Path(cfg.checkpoint_dir) / "mlflow_run.json",
                        asdict(cfg) | {"diffusion": asdict(diffusion)},
                        {"dvc.latents": dvc_out_hash(cfg.latents_dir)})
    denoiser, history = fit(cfg, diffusion, run)
    save_pretrained(denoiser, cfg.out_dir)

    features = json.loads((Path(cfg.features_dir) / "config.json").read_text())
    pipeline = new_pipeline(load_pretrained(AutoencoderKL, cfg.vae_dir), denoiser, diffusion)
    pipeline.bf16 = use_bf16(cfg.bf16, pipeline.device, f"stage {cfg.stage}'s check")
    styles = write_style_priors(cfg, diffusion, "test") if cfg.stage == 3 else None
    evaluation = Evaluation(pipeline, load_clips(cfg.latents_dir, cfg.features_dir, "test"),
                            FaceLandmarks(features["dlib_predictor"]), styles, cfg.seed,
                            cfg.check_quality)
    metrics, rows, labels = evaluate_stage(cfg.stage, evaluation, cfg.eval_samples,
                                           cfg.frames(diffusion))
    vae_report = Path(cfg.vae_metrics)
    metrics["vae_reconstruction_psnr"] = json.loads(vae_report.read_text())[
        "reconstruction_psnr"] if vae_report.is_file() else None
    metrics["final_loss"] = history["loss"][-1]
    report = Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    write_text(report / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    image_grid(rows, labels, report / "samples.png")
    write_loss_plot(history, report / "loss.tsv")
    run.log_metrics({k: v for k, v in metrics.items()
                     if isinstance(v, float) and np.isfinite(v)}
                    | {f"learned.{k}": float(v) for k, v in metrics["learned"].items()})
    run.log_artifacts([report / "metrics.json", report / "samples.png", report / "loss.tsv"])
    version = register_denoiser(run, Path(cfg.out_dir), cfg.model_name)
    run.finish()
    log.info("registered %s version %s; %s", cfg.model_name, version, metrics["learned"])
    return metrics | {"registered_version": version, "model_name": cfg.model_name}
