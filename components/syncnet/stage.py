"""`svp train syncnet` (DVC stage `train_syncnet`): the SyncNet that Sync-C / Sync-D read.

Trains on the train split (or adopts syncnet_python's `syncnet_v2.model` when `pretrained`
names it), measures it on the held-out identities (`evaluate.py`), and writes `out_dir/`
(`save_pretrained`), `report_dir/metrics.json` (DVC metrics: offset accuracy, Sync-C / Sync-D
with own against other speech), `report_dir/offsets.png` (DVC plot), one MLflow run in
`svp-syncnet` and a new version of `svp-syncnet`. Checkpoints in `checkpoint_dir` (outside DVC)
let a killed run resume in the same MLflow run.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path

from components.atomic import atomic_path, write_text
from components.config import TrainSyncNetConfig
from components.syncnet.data import load_sync_clips
from components.syncnet.evaluate import held_out_quality
from components.syncnet.model import SyncNet
from components.syncnet.registry import register_syncnet
from components.syncnet.train import fit
from components.tracking import dvc_out_hash
from components.training.checkpoint import (
    load_checkpoint,
    prepare_checkpoint_dir,
    read_state,
)
from components.training.registry import save_pretrained
from components.training.run_tracking import resumable_run

log = logging.getLogger(__name__)
EXPERIMENT = "svp-syncnet"
RESUMABLE_CHANGES = {"steps", "checkpoint_every", "workers", "use_gpu", "out_dir", "report_dir",
                     "model_name", "eval_window"}


def prepare_checkpoints(cfg: TrainSyncNetConfig) -> None:
    """Keep the checkpoints only if they come from the same params and features."""
    features = Path(cfg.features_dir)
    digest = hashlib.sha256()
    for name in ("config.json", "index.parquet"):
        if (features / name).is_file():
            digest.update((features / name).read_bytes())
    recipe = {k: v for k, v in asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    recipe["features_sha256"] = digest.hexdigest()
    if prepare_checkpoint_dir(cfg.checkpoint_dir, recipe, cfg.steps):
        log.info("training params or features changed; starting over in %s", cfg.checkpoint_dir)


def offsets_plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = {int(k): v for k, v in result["offset_counts"].items()}
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.bar(list(counts), list(counts.values()), color="#3b6ea8")
    ax.set(xlabel="AV offset found (frames)", ylabel="held-out windows", xlim=(-15.5, 15.5),
           title=f"SyncNet on held-out clips: {result['offset_within_1']:.0%} within 1 frame")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _trained(cfg: TrainSyncNetConfig, run) -> tuple[SyncNet, dict]:
    final = fit(cfg, run)
    state = read_state(final)
    model = SyncNet(**state["model_config"])
    load_checkpoint(final, model)
    return model.eval(), state["history"]


def train_syncnet(cfg: TrainSyncNetConfig) -> dict:
    run_params = asdict(cfg)
    if cfg.pretrained:
        model, history = SyncNet.from_syncnet_python(cfg.pretrained), {}
        run = resumable_run(EXPERIMENT, "train_syncnet", Path(cfg.checkpoint_dir) /
                            "mlflow_run.json", run_params,
                            {"dvc.features": dvc_out_hash(cfg.features_dir)})
    else:
        prepare_checkpoints(cfg)
        run = resumable_run(EXPERIMENT, "train_syncnet", Path(cfg.checkpoint_dir) /
                            "mlflow_run.json", run_params,
                            {"dvc.features": dvc_out_hash(cfg.features_dir)})
        model, history = _trained(cfg, run)
    save_pretrained(model, cfg.out_dir)
    clips = load_sync_clips(cfg.features_dir, "test", model.config.face_size,
                            model.config.face_region)
    result = held_out_quality(model, clips, cfg.eval_window)
    if history:
        result["final_loss"] = round(history["loss"][-1], 4)
    report = Path(cfg.report_dir)
    report.mkdir(parents=True, exist_ok=True)
    write_text(report / "metrics.json", json.dumps(result, indent=2) + "\n")
    offsets_plot(result, report / "offsets.png")
    run.log_metrics({"offset_within_1": result["offset_within_1"],
                     "sync_c.own_speech": result["sync_c"]["own_speech"]["mean"],
                     "sync_c.other_speech": result["sync_c"]["other_speech"]["mean"],
                     "sync_d.own_speech": result["sync_d"]["own_speech"]["mean"],
                     "sync_d.other_speech": result["sync_d"]["other_speech"]["mean"]})
    run.log_artifacts([report / "metrics.json", report / "offsets.png"])
    result["registered_version"] = register_syncnet(run, Path(cfg.out_dir), cfg.model_name)
    run.finish()
    log.info("registered %s version %s", cfg.model_name, result["registered_version"])
    return result
