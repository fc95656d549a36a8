"""Spans recorded by the serving process (`tracing.Span`) become the SDK's own spans in the exporting process, with
the parentage, links, trace state, exception events and statuses the SDK itself would give them; the exporting
process delivers them to a collector, and its death costs spans, never a request."""

from __future__ import annotations

import time
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.resources import Resource  # noqa: E402
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.sdk.util.instrumentation import InstrumentationScope  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402

from finalmile import tracing  # noqa: E402
from finalmile.tracing.export import ProcessExport, rebuild  # noqa: E402
from tests.fixtures import OtlpReceiver  # noqa: E402

RESOURCE = Resource.create({"service.name": "finalmile-test"})
SCOPE = InstrumentationScope("finalmile")
PARENT = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=abc"}


class Kept:
    """A sink keeping the records `Span.end` hands it."""

    def __init__(self) -> None:
        self.records: list[tuple[Any, ...]] = []

    def add(self, record: tuple[Any, ...]) -> None:
        self.records.append(record)


def _records(monkeypatch: pytest.MonkeyPatch) -> tuple[list[tuple[Any, ...]], dict[str, str]]:
    """Two requests' records as the server makes them (one with a remote parent and a trace state), sharing a batch
    whose model step fails, and the failed request's answer headers."""
    kept = Kept()
    monkeypatch.setattr(tracing, "_sink", kept)
    monkeypatch.setattr(tracing, "_ratio", 1.0)
    request = tracing.start_request("p", "v2", PARENT)
    other = tracing.start_request("p", "v2", {})
    with tracing.child(request, "decode"):
        pass

    def work() -> None:
        with tracing.step("model m:1"):
            raise ValueError("bad row")

    with pytest.raises(ValueError):
        tracing.batch([request, other], [time.time_ns()] * 2, work)()
    answer: dict[str, str] = {}
    tracing.end_request(request, 500, answer)
    tracing.end_request(other, 200, {})
    return kept.records, answer


def test_recorded_spans_become_the_sdks_spans_with_their_parents_links_state_and_errors(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    records, answer = _records(monkeypatch)
    spans = [rebuild(r, RESOURCE, SCOPE) for r in records]
    assert encode_spans(spans).SerializeToString()  # what the OTLP exporter sends
    by_name: dict[str, list[Any]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    request = next(s for s in by_name["infer p"] if s.parent is not None)
    other = next(s for s in by_name["infer p"] if s.parent is None)
    assert (
        request.context.trace_id == 0x4BF92F3577B34DA6A3CE929D0E0E4736 and request.parent.span_id == 0x00F067AA0BA902B7
    )
    assert request.parent.is_remote and request.kind is SpanKind.SERVER
    assert request.context.trace_state.get("vendor") == "abc" and answer["tracestate"] == "vendor=abc"
    assert answer["traceparent"] == f"00-{request.context.trace_id:032x}-{request.context.span_id:016x}-01"
    assert request.status.status_code is StatusCode.ERROR and request.attributes["http.response.status_code"] == 500
    assert other.status.status_code is StatusCode.UNSET and other.context.trace_id != request.context.trace_id
    (batch,) = by_name["batch"]
    assert batch.parent.span_id == request.context.span_id and not batch.parent.is_remote
    assert [(link.context.trace_id, link.context.span_id) for link in batch.links] == [
        (other.context.trace_id, other.context.span_id)
    ]
    assert {q.parent.span_id for q in by_name["queue"]} == {request.context.span_id, other.context.span_id}
    (decode,) = by_name["decode"]
    assert decode.parent.span_id == request.context.span_id and decode.status.status_code is StatusCode.UNSET
    (model,) = by_name["model m:1"]
    assert model.parent.span_id == batch.context.span_id and model.kind is SpanKind.INTERNAL

    sdk = InMemorySpanExporter()  # the same failure recorded by the SDK: the same event and status
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(sdk))
    with pytest.raises(ValueError), provider.get_tracer("finalmile").start_as_current_span("model m:1"):
        raise ValueError("bad row")
    (theirs,) = sdk.get_finished_spans()
    for ours in (model, batch):
        assert ours.status.status_code is theirs.status.status_code
        assert ours.status.description == theirs.status.description
        assert [e.name for e in ours.events] == [e.name for e in theirs.events] == ["exception"]
        assert set(ours.events[0].attributes) == set(theirs.events[0].attributes)
        for key in ("exception.type", "exception.message"):
            assert ours.events[0].attributes[key] == theirs.events[0].attributes[key]


def test_a_traceparent_opentelemetry_would_not_take_starts_a_trace_of_its_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    monkeypatch.setattr(tracing, "_sink", Kept())
    monkeypatch.setattr(tracing, "_ratio", 1.0)
    trace, span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    for header in (f"00-{trace}-{span}-01", f"00-{'0' * 32}-{span}-01", f"00-{trace}-{'0' * 16}-01",
                   f"ff-{trace}-{span}-01", f"00-{trace}-{span}-01-extra", f"01-{trace}-{span}-01-extra",
                   f"00-{trace}-{span}", "garbage"):  # fmt: skip
        context = get_current_span(TraceContextTextMapPropagator().extract({"traceparent": header})).get_span_context()
        ours = tracing.start_request("p", "v2", {"traceparent": header})
        assert ours is not None
        taken = ours.parent is not None
        assert taken == context.is_valid, header
        if taken:
            assert (ours.trace_id, ours.parent[0]) == (context.trace_id, context.span_id)


def test_spans_reach_the_collector_from_the_exporting_process_and_a_dead_one_costs_only_spans(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    records, _ = _records(monkeypatch)
    shipped = ProcessExport("otlp")
    try:
        for record in records:
            shipped.add(record)
        shipped.flush()
        deadline = time.monotonic() + 30
        names: list[str] = []
        while time.monotonic() < deadline and len(names) < len(records):
            time.sleep(0.1)
            names = [s.name for body in list(receiver.bodies)
                     for r in ExportTraceServiceRequest.FromString(body).resource_spans
                     for scope in r.scope_spans for s in scope.spans]  # fmt: skip
        assert sorted(names) == sorted(r[0] for r in records)

        assert shipped._child is not None
        shipped._child.kill()
        shipped._child.wait()
        for record in records:
            shipped.add(record)  # never raises: the server goes on
        shipped.flush()
        assert shipped.dropped == len(records) and shipped._child is None
    finally:
        shipped.shutdown()
        receiver.close()


def test_a_batch_traced_here_spans_its_steps_and_one_carried_from_ray_only_names_its_traces(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    kept = Kept()
    monkeypatch.setattr(tracing, "_sink", kept)
    monkeypatch.setattr(tracing, "_ratio", 1.0)
    seen: list[tuple[bool, list[str | None] | None]] = []

    def work() -> None:
        with tracing.step("model m:1"):
            seen.append((tracing.in_batch(), tracing.batch_traces()))

    for carried in (["4bf92f3577b34da6a3ce929d0e0e4736", None], [None, None]):  # a replica's batch: no span of its own
        tracing.carried(carried, work)()
    assert seen == [(False, ["4bf92f3577b34da6a3ce929d0e0e4736", None]), (False, [None, None])]
    assert kept.records == []
    request = tracing.start_request("p", "v2", {})
    tracing.batch([request, None], [time.time_ns(), time.time_ns()], work)()
    tracing.end_request(request, 200, {})
    assert seen[-1] == (True, [tracing.trace_id(request), None])
    spans = {r[0]: rebuild(r, RESOURCE, SCOPE) for r in kept.records}
    assert spans["model m:1"].parent.span_id == spans["batch"].context.span_id
    assert spans["batch"].parent.span_id == spans["queue"].parent.span_id == spans["infer p"].context.span_id
