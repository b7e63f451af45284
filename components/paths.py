"""How paths are stored inside SVP's tables, and read back: resolved here and nowhere else.

- A dataset's own files (a features clip in `index.parquet`) are stored relative to the dataset
  folder: the folder can be moved, pulled into another checkout or read from a Ray worker.
- Files of another dataset (the media a manifest names) are stored relative to the project root
  when they lie inside it, absolute otherwise (a corpus on shared storage keeps its path).

The project root is the nearest folder at or above the working directory that holds `dvc.yaml`
(the working directory if none does): where `dvc repro` and `svp` run stages.
"""

from __future__ import annotations

import os
from pathlib import Path


def absolute(path: str | Path) -> Path:
    """Absolute without following symbolic links (a link is stored as the link)."""
    return Path(os.path.abspath(path))


def project_root() -> Path:
    here = absolute(Path.cwd())
    return next((p for p in (here, *here.parents) if (p / "dvc.yaml").is_file()), here)


def to_stored(path: str | Path, anchor: str | Path | None = None) -> str:
    """`path` relative to `anchor` (default: the project root) if inside it, else absolute."""
    path = absolute(path)
    anchor = absolute(anchor) if anchor is not None else project_root()
    return (path.relative_to(anchor) if path.is_relative_to(anchor) else path).as_posix()


def resolve(stored: str | Path, anchor: str | Path | None = None) -> Path:
    """The absolute path of a stored path (`anchor` as given to `to_stored`)."""
    stored = Path(stored)
    if stored.is_absolute():
        return stored
    return (absolute(anchor) if anchor is not None else project_root()) / stored


MEDIA_COLUMNS = ("video_path", "audio_path", "sidecar_path")  # a manifest's stored paths


def with_absolute_media(row: dict) -> dict:
    """A manifest row whose media paths are absolute, for work done in another process."""
    return row | {k: str(resolve(row[k])) for k in MEDIA_COLUMNS if row.get(k)}
