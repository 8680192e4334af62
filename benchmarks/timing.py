"""The one timing helper the benchmark scripts share (run them from anywhere: each script's
own folder is on ``sys.path``, so ``from timing import timed`` finds this file)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def timed(run: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``repeat`` calls of ``run``, after one warm-up call."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
