from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pytest

from finalmile.backends.batcher import Batcher, packed


class Recorder:
    """Runs a 'model' that doubles column x, recording each batch's size; slow enough for requests to pile up."""

    def __init__(self, delay: float = 0.01, fail_on: float | None = None) -> None:
        self.batches: list[int] = []
        self.chunks: list[int] = []
        self.delay = delay
        self.fail_on = fail_on
        self.lock = threading.Lock()

    def run(self, table: pa.Table, requests: np.ndarray, ids: object = ()) -> tuple[pa.Table, np.ndarray]:
        with self.lock:
            self.batches.append(table.num_rows)
            self.chunks.append(table.column("x").num_chunks)
        if self.fail_on is not None and self.fail_on in table.column("x").to_pylist():
            raise ValueError("poisoned row")
        time.sleep(self.delay)
        doubled = pa.table({"y": pa.compute.multiply(table.column("x"), 2), "r": pa.array(requests)})
        return doubled, requests

    @staticmethod
    def split(result: tuple[pa.Table, np.ndarray], spans: list[tuple[int, int]]) -> list[pa.Table]:
        return [result[0].slice(o, n) for o, n in spans]


def make(recorder: Recorder, **kw: object) -> Batcher:
    return Batcher(recorder.run, recorder.split, ThreadPoolExecutor(2), **kw)  # type: ignore[arg-type]


async def submit_many(batcher: Batcher, values: list[float]) -> list[pa.Table]:
    return await asyncio.gather(*(batcher.submit(pa.table({"x": [v]})) for v in values))


def test_concurrent_requests_are_coalesced_and_split_back() -> None:
    recorder = Recorder()
    batcher = make(recorder, max_batch_size=8, max_delay_ms=5)
    results = asyncio.run(submit_many(batcher, [float(i) for i in range(20)]))
    assert [r.column("y").to_pylist() for r in results] == [[2.0 * i] for i in range(20)]
    assert len(recorder.batches) < 20 and max(recorder.batches) <= 8 and sum(recorder.batches) == 20
    assert set(recorder.chunks) == {1}  # joined: the model and the log read one array, not one per request


def test_delay_zero_turns_batching_off_and_big_requests_run_alone() -> None:
    recorder = Recorder(delay=0.0)
    asyncio.run(submit_many(make(recorder, max_batch_size=8, max_delay_ms=0), [1.0, 2.0, 3.0]))
    assert recorder.batches == [1, 1, 1]
    recorder = Recorder(delay=0.0)
    big = asyncio.run(make(recorder, max_batch_size=4, max_delay_ms=5).submit(pa.table({"x": [1.0] * 10})))
    assert big.num_rows == 10 and recorder.batches == [10]


def test_a_lone_client_never_waits_for_the_delay() -> None:
    recorder = Recorder(delay=0.0)
    batcher = make(recorder, max_batch_size=64, max_delay_ms=200)

    async def sequential() -> float:
        started = time.perf_counter()
        for i in range(5):
            await batcher.submit(pa.table({"x": [float(i)]}))
        return time.perf_counter() - started

    assert asyncio.run(sequential()) < 0.5  # 5 × 200 ms would be 1 s


def test_a_bad_request_fails_alone_not_its_batch_mates() -> None:
    recorder = Recorder(fail_on=13.0)
    batcher = make(recorder, max_batch_size=32, max_delay_ms=5)

    async def go() -> list[object]:
        return await asyncio.gather(
            *(batcher.submit(pa.table({"x": [float(i)]})) for i in range(20)), return_exceptions=True
        )

    results = asyncio.run(go())
    failures = [i for i, r in enumerate(results) if isinstance(r, Exception)]
    assert failures == [13]
    with pytest.raises(ValueError, match="poisoned"):
        raise results[13]  # type: ignore[misc]


def test_small_batches_of_a_tiny_model_run_on_the_event_loop_and_large_ones_on_the_executor() -> None:
    threads: list[str] = []
    recorder = Recorder(delay=0.0)

    def run(table: pa.Table, requests: np.ndarray, ids: object = ()) -> tuple[pa.Table, np.ndarray]:
        threads.append(threading.current_thread().name)
        return recorder.run(table, requests)

    batcher = Batcher(run, recorder.split, ThreadPoolExecutor(1, "pool"), 64, 1.0, inline=lambda rows: rows <= 4)

    async def go() -> tuple[str, list[pa.Table]]:
        small = await batcher.submit(pa.table({"x": [1.0, 2.0]}))
        big = await batcher.submit(pa.table({"x": [float(i) for i in range(10)]}))
        return threading.current_thread().name, [small, big]

    loop_thread, (small, big) = asyncio.run(go())
    assert small.column("y").to_pylist() == [2.0, 4.0] and big.num_rows == 10
    assert threads[0] == loop_thread and threads[1].startswith("pool")


def test_packed_requests_run_in_batches_of_at_most_the_batch_size_in_order_a_big_one_alone() -> None:
    assert packed([600, 300, 200, 1000, 1, 1], 1000) == [[0, 1], [2], [3], [4, 5]]
    assert packed([5, 2000, 3], 1000) == [[0], [1], [2]]
    assert packed([1] * 5, 2) == [[0, 1], [2, 3], [4]]
    assert packed([], 64) == []
