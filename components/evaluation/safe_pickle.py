"""Reads a pickle of plain numpy arrays in dicts/lists/tuples without running foreign code.

The project unpickles nothing it did not write itself, except through `load_arrays`: its
`find_class` admits only the globals that rebuilding a numpy array needs, so a pickle naming any
other callable (os.system, builtins.eval, ...) is refused before anything runs. Containers,
strings and numbers are pickle opcodes, not globals, and need no admission.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct

from components.errors import SvpError

# Exactly what `pickletools.dis` shows the I3D checkpoint naming (written by numpy 1.x), plus
# numpy 2's spelling of `_reconstruct`, which arrays pickled here name instead (protocols 3 and 4;
# 2 also needs _codecs.encode, 5 numpy._core.numeric._frombuffer: neither is admitted).
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _ArraysOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, path: Path) -> None:
        super().__init__(file)
        self._path = path

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise SvpError(f"{self._path}: refused to unpickle the global {module}.{name} "
                           "(only numpy arrays in dicts/lists are admitted)") from None


def load_arrays(path: str | Path) -> Any:
    """The object pickled at `path`, provided it is built only of numpy arrays, containers,
    strings and numbers; otherwise a one-line SvpError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise SvpError(f"{path}: pickle file not found")
    with path.open("rb") as f:
        try:
            return _ArraysOnlyUnpickler(f, path).load()
        except SvpError:
            raise
        except Exception as err:  # truncated or corrupt: any of a dozen exception types
            raise SvpError(f"{path}: not a readable pickle "
                           f"({type(err).__name__}: {' '.join(str(err).split())[:120]})") from None
