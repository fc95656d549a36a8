"""What the payload of one Ray call costs to serialize and read back, before and after issue 15's second stop.

    .venv/bin/python bench/ray_payload.py [--requests 8] [--repeat 2000]

A front's batch of `--requests` one-row requests (29 float columns) and the replica's answer (a label and two
probabilities per row), round-tripped as Ray Serve carries them:
- before: cloudpickle (Serve's default) of the Arrow table, and of an answer holding the batch's Arrow tables;
- now: plain pickle (`request_serialization="pickle"`) of the rows as one Arrow IPC stream, and of an `Answer`
  whose tables pickle as IPC streams (`backends/ray_replica.py`).
"""

from __future__ import annotations

import argparse
import pickle
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
from ray import cloudpickle
from rich.console import Console
from rich.table import Table

from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.backends.batcher import spans
from finalmile.backends.ray_replica import Answer
from finalmile.pipelines.batch import Batch


def per_call_us(work: Callable[[], Any], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        work()
    return (time.perf_counter() - started) / repeat * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=2000)
    args = parser.parse_args()
    n = args.requests
    rng = np.random.default_rng(0)
    rows = pa.table({f"x{i}": rng.standard_normal(n) for i in range(29)})
    outputs = pa.table({"label": np.zeros(n, np.int64), "p0": rng.random(n), "p1": rng.random(n)})
    batch = Batch.start(rows)
    batch.table, batch.request_ids = outputs, [f"r{i}" for i in range(n)]
    sent, ids = spans([1] * n), [None] * n
    answer = Answer(batch, list(range(n)), {})

    def request_before() -> Any:
        return cloudpickle.loads(cloudpickle.dumps((rows, sent, ids, True)))

    def request_now() -> Any:
        data, *_ = pickle.loads(pickle.dumps((to_ipc(rows), sent, ids, True), protocol=pickle.HIGHEST_PROTOCOL))
        return from_ipc(data)

    sent_before = replace(batch, inputs=rows.slice(0, 0))  # the replica dropped the logged inputs, as now

    def answer_before() -> Any:
        return cloudpickle.loads(cloudpickle.dumps((sent_before, list(range(n)), {})))

    def answer_now() -> Any:
        return pickle.loads(pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL))

    assert answer_now().results("p", 1, sent)[3].table.equals(outputs.slice(3, 1))
    table = Table(f"{n} one-row requests", "before µs", "now µs", "before / now")
    for what, before, now in (("request", request_before, request_now), ("answer", answer_before, answer_now)):
        b, a = per_call_us(before, args.repeat), per_call_us(now, args.repeat)
        table.add_row(what, f"{b:,.0f}", f"{a:,.0f}", f"{b / a:.1f}×")
    Console().print(table)


if __name__ == "__main__":
    main()
