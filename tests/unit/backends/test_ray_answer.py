"""A replica's answer crosses to the front pickled, its Arrow tables as IPC streams: every request gets its own
outputs, routes, checks and shadow rows back, and failures stay failures."""

from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest

pytest.importorskip("ray", reason="Ray is not installed: pip install 'finalmile[ray]'")

from finalmile.arrow.ipc import from_ipc, to_ipc  # noqa: E402
from finalmile.backends.batcher import spans  # noqa: E402
from finalmile.backends.ray_replica import Answer, Failure  # noqa: E402
from finalmile.errors import InvalidInputError  # noqa: E402
from finalmile.pipelines.batch import Batch  # noqa: E402


def test_ipc_round_trip_keeps_schema_metadata_and_values() -> None:
    table = pa.table({"x": [1.5, None, 3.0], "s": ["a", "b", None]}).replace_schema_metadata({b"k": b"v"})
    back = from_ipc(to_ipc(table))
    assert back.equals(table) and back.schema.metadata == {b"k": b"v"}


def test_an_answer_pickles_and_splits_back_per_request() -> None:
    inputs = pa.table({f"x{i}": np.arange(5, dtype=np.float64) for i in range(29)})
    outputs = pa.table({"label": [0, 1, 1, 0, 1], "p": [0.1, 0.9, 0.8, 0.2, 0.7]})
    batch = Batch.start(inputs)
    batch.table = outputs
    batch.routes = [("a", ("m:1",)), ("b", ("m:2",))]
    batch.route_index = np.array([0, 1, 1, 0, 1])
    batch.checks = {"in_range": np.array([True, False, True, True, True])}
    batch.shadow = {"m:3": pa.table({"label": [9, 8, 7, 6, 5]})}
    batch.errors = {"m:3": ""}
    batch.request_ids = ["r0", "r2"]
    second_batch = Batch.start(inputs.slice(0, 1))
    second_batch.table = pa.table({"label": [1], "p": [0.6]})
    second_batch.routes = [("a", ("m:1",))]
    second_batch.route_index = np.array([0])
    second_batch.request_ids = ["r3"]
    # The front packed 4 requests into one call: 2 rows and 3 rows (ran together), 1 row that failed its check
    # alone, and 1 row that ran in a batch of its own.
    sent = spans([2, 1, 3, 1])
    failure = Failure.of(InvalidInputError("input 'x0': expected a number", {"field": "x0"}))
    sent_back = Answer([(batch, [0, 2]), (second_batch, [3])], {1: failure})
    answer = pickle.loads(pickle.dumps(sent_back, protocol=pickle.HIGHEST_PROTOCOL))

    first, second, third, fourth = answer.results("p", 4, sent)
    assert isinstance(second, Failure) and second.error().message == "input 'x0': expected a number"
    assert first.request_id == "r0" and third.request_id == "r2" and fourth.request_id == "r3"
    assert first.table.to_pydict() == {"label": [0, 1], "p": [0.1, 0.9]}
    assert third.table.to_pydict() == {"label": [1, 0, 1], "p": [0.8, 0.2, 0.7]}
    assert fourth.table.to_pydict() == {"label": [1], "p": [0.6]}
    assert first.routes == [("a", ("m:1",)), ("b", ("m:2",))]
    assert [v for v, _ in third.routes] == ["b", "a", "b"]
    assert first.checks["in_range"].tolist() == [True, False]
    assert third.checks["in_range"].tolist() == [True, True, True]
    assert third.shadow["m:3"].column("label").to_pylist() == [7, 6, 5]
    assert all(b.inputs.num_rows == 0 for b, _ in answer.batches)  # logged in the replica; not sent back
