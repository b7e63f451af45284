"""The stage DAG as `dvc.yaml` declares it, read through DVC's own API (never restated)."""

from __future__ import annotations

import logging
import os
import re
import sys
from contextlib import chdir
from pathlib import Path

import networkx as nx

from components.errors import BAD_INPUT_EXIT_CODE, SvpError


class StageFailed(SvpError):
    """A stage's command failed; `permanent` when it reported bad input (retrying cannot help)."""

    def __init__(self, message: str, exit_status: int | None):
        super().__init__(message)
        self.exit_status = exit_status
        self.permanent = exit_status == BAD_INPUT_EXIT_CODE


def _repo(root: str | Path):
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    logging.getLogger("dvc").propagate = False  # DVC prints its own log; no second copy
    try:
        return Repo(str(root))
    except NotDvcRepoError:
        raise SvpError(f"{root}: not a DVC project (no .dvc folder)") from None


def stage_order(root: str | Path = ".") -> list[str]:
    """Stage names in an order where every stage follows the stages it depends on."""
    with _repo(root) as repo:
        graph = repo.index.graph  # edges point from a stage to the stages it depends on
        return [stage.name for stage in reversed(list(nx.topological_sort(graph)))]


def reproduce_stage(root: str | Path, name: str, force: bool = False) -> bool:
    """Run one stage if its deps, params or outs changed; True if it ran."""
    from dvc.exceptions import DvcException

    _put_interpreter_on_path()
    with chdir(root), _repo(".") as repo:  # DVC resolves targets against the working dir
        repo.scm_context.quiet = True  # no "git add dvc.lock" hint after every stage
        try:
            ran = repo.reproduce(f"dvc.yaml:{name}", single_item=True, force=force)
        except DvcException as err:
            cause = " ".join(str(err.__cause__ or err).split())
            status = re.search(r"exited with (-?\d+)", cause)
            raise StageFailed(f"stage '{name}' failed: {cause}",
                              int(status.group(1)) if status else None) from None
    return bool(ran)


def _put_interpreter_on_path() -> None:
    """Stage commands call `svp`; make it this environment's even if the venv is not active."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")

