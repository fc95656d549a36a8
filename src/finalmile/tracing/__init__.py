"""OpenTelemetry traces, off by default (`FINALMILE_TRACING=true`, `pip install 'finalmile[otel]'`).

A request's span starts at the transport (its parent from the W3C `traceparent` header the client sent, or a new
trace) and is named in the answer's `traceparent`. Beneath it: `decode`; `queue`, the time it waited for a batch;
and `batch`, shared by the requests that ran together (its parent the first request's span, a link to each of the
others), with a span per model step and one for `log`; on a Ray deployment, the front's `batch` span lasts the hop
to the replica and back, with a `ray replica` span for the call (the replica's own steps are not traced; its log
rows carry the trace ids the front sent, `carried`). A request the sampler drops takes the untraced
path, at the cost of deciding so. Each log row carries its request's `trace_id`, so a slow row found in SQL leads to
its trace. Export is configured by the standard variables: `OTEL_EXPORTER_OTLP_ENDPOINT` (OTLP over HTTP),
`OTEL_TRACES_EXPORTER` (`otlp`, `console` or `none`), `OTEL_SERVICE_NAME`, `OTEL_TRACES_SAMPLER` and
`OTEL_TRACES_SAMPLER_ARG`.

The sampler's decision is made here, before OpenTelemetry is called (with the same rule: the parent's flag for a
parent-based sampler, the trace id's low 64 bits against the ratio for `traceidratio`): the SDK's own path for a
dropped span (ids, a sampling result, a non-recording span) cost a one-row request ~10% at 1-in-100, this a
compare. A kept request's spans are then made by the SDK with an always-on sampler.

Off, every helper here is a check of one module global: nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import random
import re
from collections.abc import Callable, Iterator
from typing import Any

_tracer: Any = None
_provider: Any = None
_propagator: Any = None
_server_kind: Any = None
_ratio = 1.0
_parent_based = True
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-([0-9a-f]{2})")
_ID_LIMIT = (1 << 64) - 1
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")  # fmt: skip
_traces: contextvars.ContextVar[list[str | None] | None] = contextvars.ContextVar("finalmile_traces", default=None)
_spanning: contextvars.ContextVar[bool] = contextvars.ContextVar("finalmile_spanning", default=False)
"""True inside a batch traced in this process (`batch`), where steps get spans; a batch `carried` from another
process has trace ids for its log rows but no span here to hang steps under."""


def setup(enabled: bool) -> None:
    """Start tracing for this process (once) when `enabled`; the exporter is chosen by `OTEL_TRACES_EXPORTER`."""
    global _tracer, _provider, _propagator, _server_kind, _ratio, _parent_based
    if not enabled or _tracer is not None:
        return
    _ratio, _parent_based = sampler_from_environment()
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON
    except ImportError as exc:
        from finalmile.errors import MissingDependencyError

        raise MissingDependencyError("opentelemetry-sdk", "otel") from exc
    provider = TracerProvider(resource=service_resource(), sampler=ALWAYS_ON)  # `sampled` decided already
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if exporter != "none":  # encoded and sent by a process of its own (`tracing.export`), off the serving core
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401  (missing: say so here, not there)

        from finalmile.tracing.export import ProcessExport

        provider.add_span_processor(ProcessExport("console" if exporter == "console" else "otlp"))
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator, _server_kind = TraceContextTextMapPropagator(), SpanKind.SERVER
    _provider, _tracer = provider, provider.get_tracer("finalmile")


def service_resource() -> Any:
    """The resource every span of this server names (`OTEL_SERVICE_NAME`, default finalmile): the serving process's
    provider and the exporting child's rebuilt spans must agree."""
    from opentelemetry.sdk.resources import Resource

    return Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "finalmile")})


def sampler_from_environment() -> tuple[float, bool]:
    """(ratio of root requests kept, whether a parent's flag decides) from `OTEL_TRACES_SAMPLER[_ARG]`, as the
    SDK reads them (default `parentbased_always_on`); a name it does not know stops the server with a clear error."""
    name = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on").strip().lower()
    if name not in SAMPLERS:
        from finalmile.errors import InvalidInputError

        raise InvalidInputError(f"OTEL_TRACES_SAMPLER: {name!r} is not one of {', '.join(SAMPLERS)}",
                                {"field": "OTEL_TRACES_SAMPLER"})  # fmt: skip
    ratio = 1.0 if name.endswith("always_on") else 0.0 if name.endswith("always_off") else None
    if ratio is None:
        raw = os.environ.get("OTEL_TRACES_SAMPLER_ARG", "1.0")
        try:
            ratio = float(raw)
        except ValueError:
            ratio = -1.0
        if not 0.0 <= ratio <= 1.0:
            from finalmile.errors import InvalidInputError

            raise InvalidInputError(f"OTEL_TRACES_SAMPLER_ARG: {raw!r} is not a ratio between 0 and 1",
                                    {"field": "OTEL_TRACES_SAMPLER_ARG"})  # fmt: skip
    return ratio, name.startswith("parentbased_")


def sampled(headers: dict[str, str]) -> bool:
    """Whether a request is traced: its parent's `sampled` flag (parent-based samplers), else its trace id (the
    parent's, as `TraceIdRatioBased` reads it) or a draw against the ratio."""
    parent = headers.get("traceparent")
    found = _TRACEPARENT.fullmatch(parent.strip().lower()) if parent else None
    if found is None or int(found.group(1), 16) == 0:  # no parent (or one OpenTelemetry would not take): a root
        return _ratio >= 1.0 or random.random() < _ratio
    if _parent_based:
        return bool(int(found.group(2), 16) & 1)
    return (int(found.group(1), 16) & _ID_LIMIT) < round(_ratio * (_ID_LIMIT + 1))


def enabled() -> bool:
    return _tracer is not None


def in_batch() -> bool:
    """Whether the batch running in this thread is traced here (its steps then get spans)."""
    return _spanning.get()


def shutdown() -> None:
    """Export what waits and stop the exporting process (a server's shutdown); tracing is then off until `setup`."""
    global _tracer, _provider
    if _provider is not None:
        provider, _provider, _tracer = _provider, None, None
        provider.shutdown()


def start_request(pipeline: str, route: str, headers: dict[str, str]) -> Any:
    """A request's server span (`infer {pipeline}`), its parent taken from `traceparent` in `headers`; None when
    tracing is off or the sampler drops the request. What it needs is looked up once, at setup."""
    if _tracer is None or not sampled(headers):
        return None
    parent = _propagator.extract(headers) if "traceparent" in headers else None
    attributes = {"finalmile.pipeline": pipeline, "finalmile.route": route}
    return _tracer.start_span(f"infer {pipeline}", context=parent, kind=_server_kind, attributes=attributes)


def end_request(span: Any, status: int, out_headers: dict[str, str]) -> None:
    """End a request's span with its HTTP status, naming the trace in the answer's `traceparent`."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode, set_span_in_context

    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))
    _propagator.inject(out_headers, context=set_span_in_context(span))
    span.end()


@contextlib.contextmanager
def child(parent: Any, name: str) -> Iterator[None]:
    """A span under `parent` (a request's span) for the block; nothing when tracing is off or `parent` is None."""
    if _tracer is None or parent is None:
        yield
        return
    from opentelemetry.trace import set_span_in_context

    with _tracer.start_as_current_span(name, context=set_span_in_context(parent)):
        yield


def trace_id(span: Any) -> str | None:
    return None if span is None else format(span.get_span_context().trace_id, "032x")


def batch(parents: list[Any], enqueued_ns: list[int], work: Callable[[], Any]) -> Callable[[], Any]:
    """`work` (a batch, run in a worker thread) inside a `batch` span: its parent the first request's span, linked
    to the others', after a `queue` span per request from when it was queued; the requests' trace ids are set for
    the log rows the batch makes (`batch_traces`)."""
    if _tracer is None or not any(p is not None for p in parents):
        return work
    import time

    from opentelemetry.trace import Link, set_span_in_context, use_span

    now = time.time_ns()
    for parent, queued in zip(parents, enqueued_ns, strict=True):
        if parent is not None:
            _tracer.start_span("queue", context=set_span_in_context(parent), start_time=queued).end(end_time=now)
    first = next(p for p in parents if p is not None)
    links = [Link(p.get_span_context()) for p in parents if p is not None and p is not first]
    traces = [trace_id(p) for p in parents]

    def traced() -> Any:
        span = _tracer.start_span("batch", context=set_span_in_context(first), links=links,
                                  attributes={"finalmile.requests": len(parents)})  # fmt: skip
        try:
            with _carrying(traces, spans=True), use_span(span, end_on_exit=False):
                result = work()
        except BaseException:
            span.end()
            raise
        if not inspect.isawaitable(result):
            span.end()
            return result

        async def hop() -> Any:  # a Ray front's call to its replica: the span lasts until the answer is back
            try:  # the call sends the trace ids on (`carried`), for the replica's log rows
                with _carrying(traces, spans=True), use_span(span, end_on_exit=False):
                    return await result
            finally:
                span.end()

        return hop()

    return traced


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A span for one pipeline step (or the log) under the current batch's span; nothing when off."""
    if _tracer is None or not _spanning.get():  # only inside a batch traced here: never a trace of its own
        yield
        return
    with _tracer.start_as_current_span(name):
        yield


def batch_traces() -> list[str | None] | None:
    """The trace id of each request of the batch running in this thread (None: tracing off or untraced)."""
    return _traces.get()


def carried(traces: list[str | None] | None, work: Callable[[], Any]) -> Callable[[], Any]:
    """`work`, a batch traced in another process (a Ray front's, whose spans cover the hop), run here with its
    requests' trace ids, so the log rows it makes name their traces (all None: the front traces, this batch was not
    sampled, and its rows keep the `trace_id` column, null); no spans are made here."""
    if traces is None:
        return work

    def run() -> Any:
        with _carrying(traces):
            return work()

    return run


@contextlib.contextmanager
def _carrying(traces: list[str | None], spans: bool = False) -> Iterator[None]:
    """The trace ids of the batch this block runs, for the log rows it makes (`batch_traces`); `spans`: its steps
    get spans (`step`)."""
    token, spanning = _traces.set(traces), _spanning.set(spans)
    try:
        yield
    finally:
        _spanning.reset(spanning)
        _traces.reset(token)
