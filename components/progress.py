"""Progress of long work, readable in a terminal and in a log, and the one worker-pool loop.

In a terminal, a tqdm bar. Anywhere else (CI, Prefect, a log file) a bar's carriage returns
pile every update into one enormous line, so `progress` logs a few plain lines instead: about
every tenth of the work, with the time spent and an estimate of the time left.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from typing import TypeVar

from tqdm import tqdm

log = logging.getLogger(__name__)
T = TypeVar("T")
LINES = 10  # plain progress lines over the whole work, outside a terminal


def progress(items: Iterable[T], total: int, desc: str, unit: str) -> Iterator[T]:
    if sys.stderr.isatty():
        yield from tqdm(items, total=total, desc=desc, unit=unit)
        return
    start = time.monotonic()
    for done, item in enumerate(items, 1):
        yield item
        if done * LINES // max(total, 1) > (done - 1) * LINES // max(total, 1):
            elapsed = time.monotonic() - start
            log.info("%s: %d/%d %s (%d%%), %.0f s elapsed, about %.0f s left", desc, done, total,
                     unit, 100 * done // max(total, 1), elapsed, elapsed / done * (total - done))


def pool_map(fn: Callable[..., T], items: list, *args, workers: int, desc: str, unit: str,
             threads: bool = False, initializer: Callable[[], None] | None = None) -> Iterator[T]:
    """`fn(item, *args)` for every item on a local pool of `workers` processes (or threads),
    yielded in completion order with progress; a worker's exception is raised here."""
    pool: Executor = (ThreadPoolExecutor(max_workers=workers) if threads else
                      ProcessPoolExecutor(max_workers=workers, initializer=initializer))
    with pool:
        futures = [pool.submit(fn, item, *args) for item in items]
        try:
            for future in progress(as_completed(futures), len(futures), desc, unit):
                yield future.result()
        except BaseException:
            pool.shutdown(cancel_futures=True)  # one failure: start no more items
            raise
