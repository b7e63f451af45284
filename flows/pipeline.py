"""The Prefect flow: dvc.yaml's stages, in DVC's order, one retried task each.

The DAG is read from DVC (`components.dvc_pipeline`), never restated here; each task asks DVC to
reproduce its stage, so a stage whose deps and params did not change is skipped, exactly as
`dvc repro` would.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from components.config import load_params
from components.dvc_pipeline import reproduce_stage, stage_order
from components.errors import SvpError


@task(task_run_name="dvc:{name}")
def run_stage(root: str, name: str, force: bool = False) -> bool:
    logger = get_run_logger()
    logger.info("stage %s: checking / running", name)
    ran = reproduce_stage(root, name, force=force)
    logger.info("stage %s: %s", name, "ran" if ran else "up to date, skipped")
    return ran


@flow(name="svp-pipeline", log_prints=True)
def svp_pipeline(root: str = ".", only: list[str] | None = None, force: bool = False) -> list[str]:
    """Run the pipeline in `root`; returns the stages that actually ran."""
    root = str(Path(root).resolve())
    cfg = load_params(Path(root) / "params.yaml").pipeline
    stage_task = run_stage.with_options(retries=cfg.retries,
                                        retry_delay_seconds=cfg.retry_delay_s)
    order = [name for name in stage_order(root) if not only or name in only]
    get_run_logger().info("stages in DVC order: %s", " -> ".join(order))
    ran = [name for name in order if stage_task(root, name, force=force)]
    rows = "\n".join(f"| {name} | {'ran' if name in ran else 'up to date'} |" for name in order)
    create_markdown_artifact(key="svp-pipeline-report",
                             markdown=f"# SVP pipeline\n\n| stage | result |\n|---|---|\n{rows}\n",
                             description="Stages of dvc.yaml and whether each ran.")
    return ran


def make_deployment(root: str | Path, cron: str, name: str = "svp-scheduled"):
    """A deployment of the pipeline flow for `root` that runs on a cron schedule."""
    try:
        return svp_pipeline.to_deployment(name=name, cron=cron,
                                          parameters={"root": str(Path(root).resolve())})
    except ValueError as err:
        raise SvpError(f"--cron {cron!r}: not a valid cron schedule "
                       f"({' '.join(str(err).split())[:150]})") from None
