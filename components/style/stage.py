"""`svp train style` (DVC stage `train_style`): train, evaluate, register.

Outputs: `out_dir/` (the trained extractor as diffusers' `save_pretrained` writes it:
`config.json` + `diffusion_pytorch_model.safetensors`), `report_dir/clustering.json` (DVC
metrics: `clustering_strength.{exp,audio,both}` on the held-out identities, the random-init
baseline and per-emotion detail), `report_dir/tsne.png` (DVC plot), one MLflow run in experiment
`svp-style` with per-step losses, and a new version of the registered model
`svp-style-extractor`. Checkpoints live in `checkpoint_dir` (outside DVC) so an interrupted run
resumes, in the same MLflow run; `prepare_checkpoints` starts over when the params or the
features changed.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch

from components.atomic import write_text
from components.config import TrainStyleConfig
from components.errors import SvpError
from components.style.data import load_clips
from components.style.evaluate import MODES, clustering_strength, style_means, tsne_plot
from components.style.extractor import StyleExtractor
from components.style.registry import register_style_extractor
from components.style.train import fit
from components.tracking import dvc_out_hash
from components.training.checkpoint import (
    load_checkpoint,
    prepare_checkpoint_dir,
    read_state,
)
from components.training.registry import save_pretrained
from components.training.run_tracking import resumable_run

log = logging.getLogger(__name__)
EXPERIMENT = "svp-style"

RESUMABLE_CHANGES = {"steps", "checkpoint_every", "workers", "use_gpu", "out_dir", "report_dir",
                     "model_name"}  # params a run may change and still continue its checkpoints


def prepare_checkpoints(cfg: TrainStyleConfig) -> None:
    """Keep the checkpoints (and their MLflow run) only if they come from the same training
    params and the same features; otherwise start over."""
    features = Path(cfg.features_dir)
    digest = hashlib.sha256()
    for name in ("config.json", "index.parquet", "expression.parquet"):  # config.json: the
        # features' params and code version, which change the audio even when the rest stays
        if (features / name).is_file():
            digest.update((features / name).read_bytes())
    recipe = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    recipe["features_sha256"] = digest.hexdigest()
    recipe["checkpoint_layout"] = "training.loop"  # losses under history["loss"]: older
    # checkpoints (a "losses" list) are not resumed
    if prepare_checkpoint_dir(cfg.checkpoint_dir, recipe, cfg.steps):
        log.info("training params or features changed; starting over in %s", cfg.checkpoint_dir)


def evaluate(model: StyleExtractor, baseline: StyleExtractor, cfg: TrainStyleConfig) -> dict:
    clips = load_clips(cfg.features_dir, "test")
    if not clips:
        raise SvpError(f"{cfg.features_dir}: no held-out (test) clips to evaluate on")
    report = Path(cfg.report_dir)
    result: dict = {"clustering_strength": {}, "random_init": {}, "per_emotion": {}}
    for mode in MODES:
        trained = clustering_strength(style_means(model, clips, mode), clips)
        result["clustering_strength"][mode] = round(trained["mean"], 4)
        result["per_emotion"][mode] = {e: round(v, 4) for e, v in trained["per_emotion"].items()}
        result["random_init"][mode] = round(
            clustering_strength(style_means(baseline, clips, mode), clips)["mean"], 4)
    result["n_test_clips"] = len(clips)
    result["test_identities"] = sorted({c.identity for c in clips})
    report.mkdir(parents=True, exist_ok=True)
    tsne_plot(style_means(model, clips, "both"), clips, report / "tsne.png",
              "Style priors of held-out identities (t-SNE; size = intensity)")
    write_text(report / "clustering.json", json.dumps(result, indent=2) + "\n")
    return result


def train_style(cfg: TrainStyleConfig) -> dict:
    prepare_checkpoints(cfg)
    run = resumable_run(EXPERIMENT, "train_style", Path(cfg.checkpoint_dir) / "mlflow_run.json",
                        asdict(cfg), {"dvc.features": dvc_out_hash(cfg.features_dir)})
    final = fit(cfg, run)
    state = read_state(final)
    model = StyleExtractor(**state["model_config"])
    load_checkpoint(final, model)
    model.eval()
    save_pretrained(model, cfg.out_dir)
    torch.manual_seed(cfg.seed + 1)
    baseline = StyleExtractor.from_config(model.config).eval()
    result = evaluate(model, baseline, cfg)
    run.log_metrics({f"clustering_strength.{m}": v
                     for m, v in result["clustering_strength"].items()}
                    | {f"random_init.{m}": v for m, v in result["random_init"].items()}
                    | {"final_loss": state["history"]["loss"][-1]})
    run.log_artifacts([Path(cfg.report_dir) / "clustering.json",
                       Path(cfg.report_dir) / "tsne.png"])
    version = register_style_extractor(run, model, Path(cfg.out_dir), cfg.model_name)
    run.finish()
    result["registered_version"] = version
    log.info("registered %s version %s", cfg.model_name, version)
    return result
