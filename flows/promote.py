"""The promotion flow: `svp promote` as a retried Prefect task, to schedule on its own (the
pipeline flow runs the same function as dvc.yaml's `promote` stage)."""

from __future__ import annotations

from contextlib import chdir
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact

from components.config import load_params
from components.promotion.stage import promote


@task(retries=2, retry_delay_seconds=10)
def decide_and_move(root: str, dry_run: bool) -> dict:
    with chdir(root):  # params' paths are the project's, as under `dvc repro`
        return promote(load_params("params.yaml"), dry_run=dry_run)


@flow(name="svp-promote")
def svp_promote(root: str = ".", dry_run: bool = False) -> dict:
    record = decide_and_move(str(Path(root).resolve()), dry_run)
    verdict = "champion" if record["promoted"] else "not promoted"
    create_markdown_artifact(key="svp-promotion",
                             markdown=f"# SVP promotion\n\n**{verdict}**: {record['reason']}\n")
    return record
