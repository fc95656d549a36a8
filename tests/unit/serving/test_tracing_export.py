"""Spans exported by a process of their own: what reaches the collector must be what the SDK made, and a dead
exporting process must cost spans, never a request."""

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
from opentelemetry.trace import Link, SpanKind, Status, StatusCode, set_span_in_context  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator  # noqa: E402

from finalmile.tracing.export import ProcessExport, as_record, rebuild  # noqa: E402
from tests.fixtures import OtlpReceiver  # noqa: E402

RESOURCE = Resource.create({"service.name": "finalmile-test"})


def _spans() -> list[Any]:
    """A request's spans as the server makes them: a remote parent with a trace state, attributes, a link, an
    error status and a recorded exception (an event)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("finalmile")
    parent = TraceContextTextMapPropagator().extract(
        {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "tracestate": "vendor=abc"}
    )
    request = tracer.start_span("infer p", context=parent, kind=SpanKind.SERVER, attributes={"finalmile.route": "v2"})
    other = tracer.start_span("infer p")
    batch = tracer.start_span("batch", context=set_span_in_context(request), links=[Link(other.get_span_context())],
                              attributes={"finalmile.requests": 2})  # fmt: skip
    with pytest.raises(ValueError), tracer.start_as_current_span("model m:1", context=set_span_in_context(batch)):
        raise ValueError("bad row")
    batch.end()
    request.set_status(Status(StatusCode.ERROR, "500"))
    for span in (request, other):
        span.end()
    return list(memory.get_finished_spans())


def test_a_span_rebuilt_from_its_record_encodes_as_the_sdk_made_it() -> None:
    spans = _spans()
    rebuilt = [rebuild(as_record(s), RESOURCE, s.instrumentation_scope) for s in spans]
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()
    model = next(s for s in rebuilt if s.name == "model m:1")
    assert model.events[0].name == "exception" and model.status.status_code is StatusCode.ERROR
    request = next(s for s in rebuilt if s.name == "infer p" and s.parent is not None)
    assert request.parent.is_remote and request.context.trace_state.get("vendor") == "abc"


def test_spans_reach_the_collector_from_the_exporting_process_and_a_dead_one_costs_only_spans(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    receiver = OtlpReceiver()
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{receiver.port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    spans = _spans()
    shipped = ProcessExport("otlp")
    try:
        for span in spans:
            shipped.on_end(span)
        shipped.force_flush()
        deadline = time.monotonic() + 30
        names: list[str] = []
        while time.monotonic() < deadline and len(names) < len(spans):
            time.sleep(0.1)
            names = [s.name for body in list(receiver.bodies)
                     for r in ExportTraceServiceRequest.FromString(body).resource_spans
                     for scope in r.scope_spans for s in scope.spans]  # fmt: skip
        assert sorted(names) == sorted(s.name for s in spans)

        assert shipped._child is not None
        shipped._child.kill()
        shipped._child.wait()
        for span in spans:
            shipped.on_end(span)  # never raises: the server goes on
        shipped.force_flush()
        assert shipped.dropped == len(spans) and shipped._child is None
    finally:
        shipped.shutdown()
        receiver.close()


def test_a_batch_traced_here_spans_its_steps_and_one_carried_from_ray_only_names_its_traces(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from finalmile import tracing

    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    monkeypatch.setattr(tracing, "_tracer", provider.get_tracer("finalmile"))
    seen: list[tuple[bool, list[str | None] | None]] = []

    def work() -> None:
        with tracing.step("model m:1"):
            seen.append((tracing.in_batch(), tracing.batch_traces()))

    for carried in (["4bf92f3577b34da6a3ce929d0e0e4736", None], [None, None]):  # a replica's batch: no span of its own
        tracing.carried(carried, work)()
    assert seen == [(False, ["4bf92f3577b34da6a3ce929d0e0e4736", None]), (False, [None, None])]
    assert memory.get_finished_spans() == ()
    request = tracing._tracer.start_span("infer p")
    tracing.batch([request, None], [time.time_ns(), time.time_ns()], work)()
    request.end()
    assert seen[-1] == (True, [tracing.trace_id(request), None])
    spans = {s.name: s for s in memory.get_finished_spans()}
    assert spans["model m:1"].parent.span_id == spans["batch"].context.span_id
    assert spans["batch"].parent.span_id == spans["queue"].parent.span_id == request.get_span_context().span_id
