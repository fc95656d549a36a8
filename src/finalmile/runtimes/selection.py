"""Choosing a runtime by measurement: each candidate whose outputs match is timed on the model's own rows at a
few batch sizes, and a deployment serves the fastest at the size nearest its `max_batch_size`.

Neither runtime wins everywhere: ONNX Runtime has the smaller fixed cost per call (a one-row forest in tens of
microseconds where scikit-learn needs hundreds), while XGBoost's and LightGBM's own predictors overtake it on
large batches. The timings are stored with the version (`conversion.timings_us`) as the evidence `models show`
prints.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.runtimes.base import Runtime

BATCH_ROWS = (1, 100, 1000)
"""The batch sizes each candidate is timed at: a single request, a coalesced batch, a bulk request."""
_BUDGET_S = 0.08
_MIN_REPEATS, _MAX_REPEATS = 3, 25


def measure(candidates: dict[str, Runtime], sample: pa.Table) -> dict[str, dict[str, float]]:
    """Median microseconds per call of each candidate at each of `BATCH_ROWS`, on rows tiled from `sample`."""
    timings: dict[str, dict[str, float]] = {name: {} for name in candidates}
    for rows in BATCH_ROWS:
        batch = _tiled(sample, rows)
        for name, runtime in candidates.items():
            runtime.predict(batch)  # warm: first-call allocations and lazy initialisation are not the runtime's cost
            took: list[float] = []
            deadline = time.perf_counter() + _BUDGET_S
            while len(took) < _MIN_REPEATS or (len(took) < _MAX_REPEATS and time.perf_counter() < deadline):
                started = time.perf_counter()
                runtime.predict(batch)
                took.append(time.perf_counter() - started)
            timings[name][str(rows)] = round(float(np.median(took)) * 1e6, 1)
    return timings


def fastest(timings: dict[str, dict[str, Any]], batch_rows: int) -> str:
    """The candidate with the lowest time at the measured batch size nearest `batch_rows` (on a log scale)."""
    sizes = sorted({int(s) for t in timings.values() for s in t})
    nearest = str(min(sizes, key=lambda s: abs(math.log(s) - math.log(max(batch_rows, 1)))))
    return min((t[nearest], name) for name, t in timings.items() if nearest in t)[1]


def _tiled(sample: pa.Table, rows: int) -> pa.Table:
    if sample.num_rows >= rows:
        return sample.slice(0, rows)
    repeats = math.ceil(rows / sample.num_rows)
    return pa.concat_tables([sample] * repeats).slice(0, rows).combine_chunks()
