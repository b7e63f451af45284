"""Which project files a module runs: the import closure that `dvc.yaml`'s deps must cover
(checked by tests/test_dvc_deps.py) and that versions the features stage's per-clip code."""

from __future__ import annotations

import ast
from pathlib import Path


def import_closure(modules: list[str], root: str | Path = ".") -> set[Path]:
    """The project files (relative to `root`) of `modules` and of every project module they
    import, directly or not, at module level or inside functions."""
    root = Path(root)
    todo, files = list(modules), set()
    while todo:
        name = todo.pop()
        path = _module_file(name, root)
        if path is None or path in files:
            continue
        files.add(path)
        parts = name.split(".")  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]
        for node in ast.walk(ast.parse((root / path).read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                todo += [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    return files


def _module_file(name: str, root: Path) -> Path | None:
    if name.split(".")[0] != "components":
        return None
    base = Path(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if (root / path).is_file():
            return path
    return None


def undeclared_code(stage_deps: list[str], code: set[Path]) -> list[str]:
    """The files of `code` that no dependency (a file or a folder above it) covers."""
    declared = [Path(dep) for dep in stage_deps]
    return sorted(path.as_posix() for path in code
                  if not any(path == dep or dep in path.parents for dep in declared))
