"""How long each stage of the last pipeline run took, and what it measured.

    .venv/bin/python benchmarks/pipeline_stages.py [--out benchmarks/pipeline_stages.md]
        [--before 2026-12-05T23:08:30]

Reads the MLflow runs that `svp pipeline run` logged (the embedded SQLite store, or
`MLFLOW_TRACKING_URI`): the newest run of every stage, its wall time from start to end (a
resumed training run counts from its first start), and the stage's own headline numbers.
`--before` (UTC) keeps one pipeline run's stages when some were run again after it.
"""

from __future__ import annotations

import argparse
import os
from datetime import UTC, datetime
from pathlib import Path

from mlflow.tracking import MlflowClient
from table import cpu_name, emit

STAGES = ("synth", "ingest", "validate", "features", "train_style", "train_syncnet",
          "train_vae", "latents",
          "train_stage1", "train_stage2", "train_stage3", "assemble", "evaluate", "promote")
HEADLINES = {  # metric keys worth a column, per stage
    "train_style": ("clustering_strength.both", "random_init.both"),
    "train_syncnet": ("offset_within_1", "sync_c.own_speech", "sync_c.other_speech"),
    "train_vae": ("reconstruction_psnr",),
    "train_stage1": ("kps_error_generated", "kps_error_reference", "psnr",
                     "learned.follows_head_kps"),
    "train_stage2": ("m_lmd_own", "m_lmd_other", "m_lmd_repeated",
                     "learned.mouth_follows_audio"),
    "train_stage3": ("f_lmd_style", "f_lmd_no_style", "learned.style_moves_expression"),
    "evaluate": ("reconstruction.full.m_lmd", "reconstruction.fast.m_lmd",
                 "reconstruction.other_speech.m_lmd", "style_transfer.fast.f_lmd",
                 "style_transfer.no_style.f_lmd",
                 "style_transfer.full.fid", "reconstruction.full.fvd",
                 "reconstruction.full.sync_c", "reconstruction.real.sync_c",
                 "style_transfer.full.csim", "seconds.setup_and_rows", "seconds.sync",
                 "seconds.csim", "seconds.identity_network", "seconds.long_video"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument("--before", type=datetime.fromisoformat,
                        help="only runs started before this UTC time (ISO 8601)")
    args = parser.parse_args()
    before = "" if args.before is None else " and attributes.start_time < " + str(
        int(args.before.replace(tzinfo=UTC).timestamp() * 1000))
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('.svp/mlflow.db').resolve()}"
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    lines = [f"Machine: {cpu_name()}, {os.cpu_count()} cores; "
             "embedded default profile (`params.yaml`).", "",
             "| stage | minutes | steps | measured |", "|---|---|---|---|"]
    total = 0.0
    for stage in STAGES:
        runs = client.search_runs(experiments, f"tags.`svp.stage` = '{stage}'{before}",
                                  order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            lines.append(f"| {stage} | — | | not run |")
            continue
        run = runs[0]
        minutes = ((run.info.end_time or run.info.start_time) - run.info.start_time) / 60_000
        total += minutes
        shown = [f"{k} {run.data.metrics[k]:.3g}" for k in HEADLINES.get(stage, ())
                 if k in run.data.metrics]
        steps = run.data.params.get("steps", "")
        lines.append(f"| {stage} | {minutes:.2f} | {steps} | {', '.join(shown)} |")
    lines.append(f"| **all stages** | **{total:.2f}** | | (Prefect and DVC overhead not "
                 "included) |")
    emit(lines, args.out)


if __name__ == "__main__":
    main()
