"""Shared ending of the benchmark scripts: print the Markdown table, and save it if asked."""

from __future__ import annotations

from pathlib import Path


def emit(lines: list[str], out: Path | None) -> None:
    table = "\n".join(lines) + "\n"
    print(table)
    if out:
        out.write_text(table)
