"""Progress outside a terminal: a few plain lines, never a bar's carriage returns."""

from __future__ import annotations

import logging

from components.progress import pool_map, progress


def test_a_log_gets_about_ten_plain_lines(caplog, capsys):
    with caplog.at_level(logging.INFO, logger="components.progress"):
        assert list(progress(range(500), 500, "features", "clips")) == list(range(500))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 10 and lines[-1].startswith("features: 500/500 clips (100%)")
    assert "\r" not in capsys.readouterr().err  # pytest's stderr is no terminal


def _square(x: int, offset: int) -> int:
    return x * x + offset


def test_pool_map_runs_every_item_and_reports(caplog):
    with caplog.at_level(logging.INFO, logger="components.progress"):
        results = sorted(pool_map(_square, list(range(7)), 1, workers=2, desc="t", unit="x"))
        threaded = sorted(pool_map(_square, [3], 0, workers=1, desc="t", unit="x", threads=True))
    assert results == [x * x + 1 for x in range(7)] and threaded == [9]
    assert any("t: 7/7 x" in r.getMessage() for r in caplog.records)
