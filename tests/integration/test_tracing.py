"""OpenTelemetry traces from a real `finalmile serve` (FINALMILE_TRACING=true) to an OTLP/HTTP receiver made here:
the client's `traceparent` is honoured (its sampled flag too) and named back, each request has decode, queue, batch,
model and log spans, a batch shared by several requests links them all, and the log row carries the trace id."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from finalmile import Client
from finalmile.errors import QueryError
from tests.fixtures import OtlpReceiver, tabular

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest  # noqa: E402

X, _ = tabular(100)
SLOW = """
import time


class Slow:
    \"\"\"50 ms a batch, so that concurrent requests wait for one another and share batches.\"\"\"

    def predict(self, frame):
        time.sleep(0.05)
        return frame[["x0"]].rename(columns={"x0": "score"})
"""
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
DROPPED = "0af7651916cd43dd8448eb211c80319c"


class Receiver(OtlpReceiver):
    """The spans it was sent."""

    @property
    def spans(self) -> list[Any]:
        found = []
        for body in list(self.bodies):
            for resource in ExportTraceServiceRequest.FromString(body).resource_spans:
                for scope in resource.scope_spans:
                    found.extend(scope.spans)
        return found

    def of(self, trace: str) -> list[Any]:
        return [s for s in self.spans if s.trace_id.hex() == trace]


def test_a_request_is_traced_from_its_traceparent_to_its_log_row(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    code = tmp_path / "slow.py"
    code.write_text(SLOW)
    with Client(home=home) as client:
        client.upload_model("m", code, sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy(max_batch_size=64, max_delay_ms=20)
    receiver = Receiver()
    env = {
        "FINALMILE_TRACING": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
        "OTEL_BSP_SCHEDULE_DELAY": "100", "OTEL_SERVICE_NAME": "finalmile-test", "FINALMILE_LOG_COMPACT_S": "0.5",
    }  # fmt: skip
    server = server_factory(home, env=env)
    body = X.head(1).to_json(orient="records")

    def call(traceparent: str | None) -> httpx.Response:
        headers = {"content-type": "application/json"} | ({"traceparent": traceparent} if traceparent else {})
        return httpx.post(f"{server.url}/pipelines/p/infer", content=body, headers=headers)

    answer = call(f"00-{TRACE}-{PARENT}-01")
    assert answer.status_code == 200 and answer.headers["traceparent"].split("-")[1] == TRACE
    dropped = call(f"00-{DROPPED}-{PARENT}-00")  # the client's sampler dropped its trace: so does the server
    assert dropped.status_code == 200 and "traceparent" not in dropped.headers
    with ThreadPoolExecutor(8) as pool:  # concurrent requests share batches: their batch span links them
        together = list(pool.map(call, [None] * 16))
    assert {a.status_code for a in together} == {200}

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len({s.name for s in receiver.of(TRACE)}) < 6:
        time.sleep(0.2)
    spans = {s.name: s for s in receiver.of(TRACE)}
    assert set(spans) == {"infer p", "decode", "queue", "batch", "model m:1", "log"}, set(spans)
    assert receiver.of(DROPPED) == []
    request = spans["infer p"]
    assert request.parent_span_id.hex() == PARENT  # the client's span is its parent
    assert answer.headers["traceparent"].split("-")[2] == request.span_id.hex()
    for name in ("decode", "queue", "batch"):
        assert spans[name].parent_span_id == request.span_id, name
    for name in ("model m:1", "log"):
        assert spans[name].parent_span_id == spans["batch"].span_id, name
    assert spans["queue"].end_time_unix_nano <= spans["batch"].start_time_unix_nano + 1_000_000

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(len(s.links) for s in receiver.spans if s.name == "batch"):
        time.sleep(0.2)
    shared = [s for s in receiver.spans if s.name == "batch" and len(s.links)]
    assert shared, "no batch held several requests"
    linked = {link.trace_id.hex() for s in shared for link in s.links}
    mine = {a.headers["traceparent"].split("-")[1] for a in together}
    assert linked <= mine | {TRACE} and linked

    with Client(home=home) as client:
        deadline, rows = time.monotonic() + 30, None
        request_id = answer.headers["finalmile-request-id"]
        while time.monotonic() < deadline:
            try:
                rows = client.query(f"SELECT trace_id FROM logs WHERE request_id = '{request_id}'")
            except QueryError:  # not in a sealed part yet: the log has no trace_id column so far
                rows = None
            if rows is not None and len(rows):
                break
            time.sleep(0.5)
        assert rows is not None and list(rows.trace_id) == [TRACE]
