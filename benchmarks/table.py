"""Shared parts of the benchmark scripts: the machine's CPU, and the ending (print the Markdown
table, and save it if asked)."""

from __future__ import annotations

import platform
from pathlib import Path


def cpu_name() -> str:
    """The CPU's model name (platform.processor() says only "x86_64" on Linux)."""
    info = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in info.read_text().splitlines()
             if line.startswith("model name")] if info.is_file() else []
    return names[0] if names else platform.machine()


def emit(lines: list[str], out: Path | None) -> None:
    table = "\n".join(lines) + "\n"
    print(table)
    if out:
        out.write_text(table)
