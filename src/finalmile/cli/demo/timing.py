"""Throughput measurement shared by the demo and the benchmarks in `bench/`."""

from __future__ import annotations

import time
from collections.abc import Callable


def calls_per_second(fn: Callable[[], object], seconds: float = 1.0, min_calls: int = 3) -> float:
    """How many times a second `fn` runs, measured over about `seconds` after one warm-up call."""
    fn()
    calls = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        fn()
        calls += 1
        now = time.perf_counter()
        if now >= deadline and calls >= min_calls:
            return calls / (now - start)
