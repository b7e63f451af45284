"""Complete-or-absent writes: every output goes to a temp file beside it, then is renamed."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path next to `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def keep_only_if_made_by(folder: str | Path, recipe: dict) -> bool:
    """Resumable work folders: keep `folder` only if its `config.json` records this `recipe`
    (params, code or input versions); otherwise empty it. Returns True if it was emptied."""
    folder = Path(folder)
    marker = folder / "config.json"
    recipe = json.loads(json.dumps(recipe))  # as it reads back: a params tuple becomes a list
    stale = marker.exists() and json.loads(marker.read_text()) != recipe
    if stale:
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_text(marker, json.dumps(recipe, indent=2, sort_keys=True) + "\n")
    return stale


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_parquet(path: str | Path, table: pa.Table) -> None:
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
