"""`svp train style` (DVC stage `train_style`): train, evaluate, register.

Outputs: `out_dir/{model.safetensors,config.json}` (the trained extractor),
`report_dir/clustering.json` (DVC metrics: `clustering_strength.{exp,audio,both}` on the held-out
identities, the random-init baseline and per-emotion detail), `report_dir/tsne.png` (DVC plot),
one MLflow run in experiment `svp-style` with per-step losses, and a new version of the
registered model `svp-style-extractor`. Checkpoints live in `checkpoint_dir` (outside DVC) so an
interrupted run resumes, in the same MLflow run; `prepare_checkpoints` starts over when the
params or the features changed.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file

from components.atomic import keep_only_if_made_by, write_text
from components.config import TrainStyleConfig
from components.errors import SvpError
from components.runtime import mlflow_artifact_location, mlflow_tracking_uri
from components.style.data import load_clips
from components.style.evaluate import MODES, clustering_strength, style_means, tsne_plot
from components.style.extractor import StyleExtractor
from components.style.registry import log_and_register, write_model_files
from components.style.train import fit, model_config
from components.tracking import git_commit

log = logging.getLogger(__name__)
EXPERIMENT = "svp-style"


RESUMABLE_CHANGES = {"steps", "checkpoint_every", "workers", "use_gpu", "out_dir", "report_dir",
                     "model_name"}  # params a run may change and still continue its checkpoints


def prepare_checkpoints(cfg: TrainStyleConfig) -> None:
    """Keep the checkpoints (and their MLflow run) only if they come from the same training
    params and the same features; otherwise start over."""
    import hashlib

    features = Path(cfg.features_dir)
    digest = hashlib.sha256()
    for name in ("index.parquet", "expression.parquet"):
        if (features / name).is_file():
            digest.update((features / name).read_bytes())
    identity = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    identity["features_sha256"] = digest.hexdigest()
    if keep_only_if_made_by(cfg.checkpoint_dir, identity):
        log.info("training params or features changed; starting over in %s", cfg.checkpoint_dir)


def _mlflow_run(cfg: TrainStyleConfig) -> dict:
    """The MLflow run for this training: resumed from the checkpoint folder if there is one."""
    import mlflow

    artifact_location = mlflow_artifact_location()
    uri = mlflow_tracking_uri()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        mlflow.create_experiment(EXPERIMENT, artifact_location=artifact_location)
    marker = Path(cfg.checkpoint_dir) / "mlflow_run.json"
    if marker.exists():
        return json.loads(marker.read_text())
    experiment = mlflow.get_experiment_by_name(EXPERIMENT).experiment_id
    run = mlflow.MlflowClient(uri).create_run(experiment, run_name="train_style", tags={
        "git.commit": git_commit() or "unknown", "dvc.features": _features_version(cfg)})
    for key, value in asdict(cfg).items():
        mlflow.MlflowClient(uri).log_param(run.info.run_id, key, value)
    info = {"uri": uri, "run_id": run.info.run_id}
    marker.parent.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(info))
    return info


def _features_version(cfg: TrainStyleConfig) -> str:
    """The DVC hash of the features the model trains on, from dvc.lock when there is one."""
    import yaml

    lock = Path("dvc.lock")
    if not lock.exists():
        return "unknown"
    for out in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).get(
            "features", {}).get("outs", []):
        if Path(out["path"]) == Path(cfg.features_dir):
            return out.get("md5", "unknown")
    return "unknown"


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
    import mlflow

    prepare_checkpoints(cfg)
    run = _mlflow_run(cfg)
    final = fit(cfg, run)
    losses = json.loads((final / "state.json").read_text())["losses"]
    weights = load_file(final / "model.safetensors")
    expression_dim = weights["expression.proj.weight"].shape[1]
    model = StyleExtractor(model_config(cfg, expression_dim))
    model.load_state_dict(weights)
    model.eval()
    write_model_files(model, Path(cfg.out_dir))
    torch.manual_seed(cfg.seed + 1)
    baseline = StyleExtractor(model.cfg).eval()
    result = evaluate(model, baseline, cfg)
    with mlflow.start_run(run_id=run["run_id"]):
        mlflow.log_metrics({f"clustering_strength.{m}": v
                            for m, v in result["clustering_strength"].items()})
        mlflow.log_metrics({f"random_init.{m}": v for m, v in result["random_init"].items()})
        mlflow.log_metric("final_loss", losses[-1])
        mlflow.log_artifact(str(Path(cfg.report_dir) / "clustering.json"))
        mlflow.log_artifact(str(Path(cfg.report_dir) / "tsne.png"))
        version = log_and_register(model, Path(cfg.out_dir), cfg.model_name)
    result["registered_version"] = version
    log.info("registered %s version %s", cfg.model_name, version)
    return result
