"""A full disk as one line: the folder, the space free and about how much the write needs.

A stage that knows what it still has to write (`features`: clips left × the size of a clip
already written; training: one more checkpoint) passes that estimate; anywhere else `svp` names
the file's folder and the space free. Partial outputs are cleaned where they are written (every
write is atomic), so a rerun with room resumes from what was complete.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from components.errors import SvpError

MIB = 2**20


def is_disk_full(err: BaseException) -> bool:
    """An OSError of a full disk, or a library's own error for one (safetensors says
    "os error 28")."""
    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(err).lower()
    return "no space left on device" in text or "os error 28" in text


def free_bytes(folder: str | Path) -> int:
    """Space free on the filesystem holding `folder` (or its nearest existing parent)."""
    path = Path(folder).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def folder_bytes(folder: str | Path, pattern: str = "*") -> list[int]:
    return [p.stat().st_size for p in Path(folder).rglob(pattern) if p.is_file()]


def disk_full(folder: str | Path, needed_bytes: int | None = None,
              resumes: str = "the stage resumes from what it wrote") -> SvpError:
    """The one-line error for a full disk under `folder`."""
    need = f", about {needed_bytes / MIB:.1f} MiB needed" if needed_bytes else ""
    return SvpError(f"{folder}: no space left on the device ({free_bytes(folder) / MIB:.1f} MiB "
                    f"free{need}); free some space and rerun: {resumes}")


def disk_full_from(err: BaseException) -> SvpError:
    """For a full disk met anywhere: the folder of the file being written, if the error names
    one."""
    filename = getattr(err, "filename", None)
    folder = Path(filename).parent if filename else Path.cwd()
    return disk_full(folder, resumes="every output is written whole or not at all, so a "
                                     "rerun starts from the last complete one")
