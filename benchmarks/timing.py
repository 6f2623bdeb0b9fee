"""The one timer of the benchmarks (each imports it as ``from timing import timed``; they run as scripts, so
this folder is on ``sys.path``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def timed(fn: Callable[[], T], repeats: int = 1) -> tuple[T, float]:
    """``fn()`` and the best wall time of ``repeats`` runs, in seconds."""
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best
