"""The Prefect flow: dvc.yaml's stages, in DVC's order, one retried task each.

The DAG is read from DVC (`components.dvc_pipeline`), never restated here; each task asks DVC to
reproduce its stage, so a stage whose deps and params did not change is skipped, exactly as
`dvc repro` would. A stage that fails on bad input is not retried; any other failure is, up to
`pipeline.retries` times. Failures end the run as a Failed state with a one-line message.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.states import Failed

from components.config import load_params
from components.dvc_pipeline import StageFailed, reproduce_stage, stage_order
from components.errors import SvpError


def _retry_unless_bad_input(task, task_run, state) -> bool:
    return not getattr(state.result(raise_on_failure=False), "permanent", False)


@task(task_run_name="dvc:{name}", retry_condition_fn=_retry_unless_bad_input)
def run_stage(root: str, name: str, force: bool = False):
    """Reproduce one stage; True if it ran, False if it was up to date."""
    logger = get_run_logger()
    try:
        ran = reproduce_stage(root, name, force=force)
    except StageFailed as err:
        logger.error("%s", err)
        return Failed(message=str(err), data=err)
    logger.info("stage %s: %s", name, "ran" if ran else "up to date, skipped")
    return ran


@flow(name="svp-pipeline")
def svp_pipeline(root: str = ".", only: list[str] | None = None, force: bool = False):
    """Run the pipeline in `root`; returns the stages that actually ran."""
    root = str(Path(root).resolve())
    cfg = load_params(Path(root) / "params.yaml").pipeline
    stage_task = run_stage.with_options(retries=cfg.retries,
                                        retry_delay_seconds=cfg.retry_delay_s)
    order = [name for name in stage_order(root) if not only or name in only]
    get_run_logger().info("stages in DVC order: %s", " -> ".join(order))
    results: dict[str, str] = {}
    failure = None
    for name in order:
        state = stage_task(root, name, force=force, return_state=True)
        if state.is_failed():
            results[name], failure = "failed", state.message
            break
        results[name] = "ran" if state.result() else "up to date"
    rows = "\n".join(f"| {name} | {results.get(name, 'not reached')} |" for name in order)
    create_markdown_artifact(
        key="svp-pipeline-report",
        markdown=f"# SVP pipeline\n\n| stage | result |\n|---|---|\n{rows}\n"
                 + (f"\n**Failed:** {failure}\n" if failure else ""),
        description="Stages of dvc.yaml and what each did in this run.")
    if failure:
        return Failed(message=failure)
    return [name for name, result in results.items() if result == "ran"]


def make_deployment(root: str | Path, cron: str, name: str = "svp-scheduled"):
    """A deployment of the pipeline flow for `root` that runs on a cron schedule."""
    try:
        return svp_pipeline.to_deployment(name=name, cron=cron,
                                          parameters={"root": str(Path(root).resolve())})
    except ValueError as err:
        raise SvpError(f"--cron {cron!r}: not a valid cron schedule "
                       f"({' '.join(str(err).split())[:150]})") from None
