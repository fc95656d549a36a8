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

The sampler's decision is made here, with OpenTelemetry's rule (the parent's flag for a parent-based sampler, the
trace id's low 64 bits against the ratio for `traceidratio`): the SDK's own path for a dropped span (ids, a sampling
result, a non-recording span) cost a one-row request ~10% at 1-in-100, this a compare. A kept request's spans are
recorded here as plain values (`Span`: ids drawn as the SDK's `RandomIdGenerator` draws them, times, attributes,
links, an `exception` event and an error status as the SDK records them), each ended one a tuple handed to the
exporting process (`tracing.export`), which rebuilds it as the SDK's `ReadableSpan` and exports it with the SDK's
batch processor and exporter. Made by the SDK in the serving process, a traced request's six spans cost ~240 µs of
its GIL, most of the cost of tracing every request (`bench/tracing.py --spans`).

Off, every helper here is a check of one module global: nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
import random
import re
import time
import traceback
from collections.abc import Callable, Iterator
from typing import Any

_sink: Any = None
"""Where ended spans go (`tracing.export.ProcessExport`), or False: on, exporting nothing; None: tracing off."""
_ratio = 1.0
_parent_based = True
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ID_LIMIT = (1 << 64) - 1
SERVER, INTERNAL = 1, 0
"""OpenTelemetry's `SpanKind` values; and its `StatusCode`s:"""
UNSET, ERROR = 0, 2
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
            "parentbased_traceidratio")  # fmt: skip
_traces: contextvars.ContextVar[list[str | None] | None] = contextvars.ContextVar("finalmile_traces", default=None)
_current: contextvars.ContextVar[Span | None] = contextvars.ContextVar("finalmile_span", default=None)
"""The span a step's span goes under: set inside a batch traced in this process (`batch`); a batch `carried` from
another process has trace ids for its log rows but no span here to hang steps under."""


class Span:
    """A span being recorded, as plain values; `end` hands it to the exporting process as a record (the tuple
    `tracing.export.rebuild` takes)."""

    __slots__ = ("name", "trace_id", "span_id", "parent", "start", "attributes", "events", "links", "kind", "status",
                 "description", "state")  # fmt: skip

    def __init__(
        self,
        name: str,
        trace_id: int,
        parent: tuple[int, bool] | None,
        kind: int = INTERNAL,
        attributes: dict[str, Any] | None = None,
        links: list[tuple[int, int, dict[str, Any]]] | None = None,
        state: tuple[tuple[str, str], ...] | None = None,
        start: int | None = None,
    ) -> None:
        self.name, self.trace_id, self.parent, self.kind = name, trace_id, parent, kind
        self.span_id = random.getrandbits(64) or 1
        self.start = time.time_ns() if start is None else start
        self.attributes, self.links, self.state = attributes, links, state
        self.events: list[tuple[str, int, dict[str, Any]]] | None = None
        self.status: int = UNSET
        self.description: str | None = None

    def child(self, name: str, **kwargs: Any) -> Span:
        return Span(name, self.trace_id, (self.span_id, False), state=self.state, **kwargs)

    def set_attribute(self, key: str, value: Any) -> None:
        self.attributes = (self.attributes or {}) | {key: value}

    def failed(self, exc: BaseException) -> None:
        """Record `exc` as the SDK does for a span ended by it: an `exception` event and an error status."""
        event = {
            "exception.type": type(exc).__name__,
            "exception.message": str(exc),
            "exception.stacktrace": "".join(traceback.format_exception(exc)),
            "exception.escaped": "False",
        }
        self.events = [*(self.events or ()), ("exception", time.time_ns(), event)]
        self.status, self.description = ERROR, f"{type(exc).__name__}: {exc}"

    def end(self, end: int | None = None) -> None:
        if _sink:
            _sink.add((self.name, self.trace_id, self.span_id, self.parent, self.start,
                       time.time_ns() if end is None else end, self.attributes, self.events, self.links, self.kind,
                       self.status, self.description, self.state))  # fmt: skip

    @contextlib.contextmanager
    def current(self) -> Iterator[Span]:
        """This span, current for the block (steps go under it) and ended after it, recording what ended it."""
        token = _current.set(self)
        try:
            yield self
        except BaseException as exc:
            self.failed(exc)
            raise
        finally:
            _current.reset(token)
            self.end()


def setup(enabled: bool) -> None:
    """Start tracing for this process (once) when `enabled`; the exporter is chosen by `OTEL_TRACES_EXPORTER`."""
    global _sink, _ratio, _parent_based
    if not enabled or _sink is not None:
        return
    _ratio, _parent_based = sampler_from_environment()
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    try:  # the exporting process needs them: missing, say so here, not there
        import opentelemetry.sdk.trace  # noqa: F401

        if exporter not in ("none", "console"):  # any other name exports over OTLP, as before
            import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
    except ImportError as exc:
        from finalmile.errors import MissingDependencyError

        raise MissingDependencyError("opentelemetry-sdk", "otel") from exc
    if exporter == "none":
        _sink = False
        return
    from finalmile.tracing.export import ProcessExport

    _sink = ProcessExport("console" if exporter == "console" else "otlp")


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


def parent_of(headers: dict[str, str]) -> tuple[int, int, bool] | None:
    """(trace id, span id, sampled flag) of a W3C `traceparent` OpenTelemetry's propagator would take, else None."""
    raw = headers.get("traceparent")
    found = _TRACEPARENT.fullmatch(raw.strip().lower()) if raw else None
    if found is None or found.group(1) == "ff" or (found.group(1) == "00" and found.group(5)):
        return None
    trace, span = int(found.group(2), 16), int(found.group(3), 16)
    if not trace or not span:
        return None
    return trace, span, bool(int(found.group(4), 16) & 1)


def sampled(headers: dict[str, str]) -> bool:
    """Whether a request is traced: its parent's `sampled` flag (parent-based samplers), else its trace id (the
    parent's, as `TraceIdRatioBased` reads it) or a draw against the ratio."""
    return _sampled(parent_of(headers) if "traceparent" in headers else None)


def _sampled(parent: tuple[int, int, bool] | None) -> bool:
    if parent is None:  # no parent (or one OpenTelemetry would not take): a root
        return _ratio >= 1.0 or random.random() < _ratio
    if _parent_based:
        return parent[2]
    return (parent[0] & _ID_LIMIT) < round(_ratio * (_ID_LIMIT + 1))


def enabled() -> bool:
    return _sink is not None


def in_batch() -> bool:
    """Whether the batch running in this thread is traced here (its steps then get spans)."""
    return _current.get() is not None


def shutdown() -> None:
    """Export what waits and stop the exporting process (a server's shutdown); tracing is then off until `setup`."""
    global _sink
    sink, _sink = _sink, None
    if sink:
        sink.shutdown()


def start_request(pipeline: str, route: str, headers: dict[str, str]) -> Span | None:
    """A request's server span (`infer {pipeline}`), its parent taken from `traceparent` in `headers`; None when
    tracing is off or the sampler drops the request."""
    if _sink is None:
        return None
    parent = parent_of(headers) if "traceparent" in headers else None
    if not _sampled(parent):
        return None
    attributes = {"finalmile.pipeline": pipeline, "finalmile.route": route}
    if parent is None:
        return Span(f"infer {pipeline}", random.getrandbits(128) or 1, None, SERVER, attributes)
    state = _trace_state(headers.get("tracestate"))
    return Span(f"infer {pipeline}", parent[0], (parent[1], True), SERVER, attributes, state=state)


def _trace_state(header: str | None) -> tuple[tuple[str, str], ...] | None:
    """A `tracestate` header's entries as OpenTelemetry parses them (none when it is not valid)."""
    if not header:
        return None
    from opentelemetry.trace.span import TraceState

    return tuple(TraceState.from_header([header]).items()) or None


def end_request(span: Span | None, status: int, out_headers: dict[str, str]) -> None:
    """End a request's span with its HTTP status, naming the trace in the answer's `traceparent`."""
    if span is None:
        return
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.status = ERROR
    out_headers["traceparent"] = f"00-{span.trace_id:032x}-{span.span_id:016x}-01"
    if span.state:
        out_headers["tracestate"] = ",".join(f"{key}={value}" for key, value in span.state)
    span.end()


@contextlib.contextmanager
def child(parent: Span | None, name: str) -> Iterator[None]:
    """A span under `parent` (a request's span) for the block; nothing when tracing is off or `parent` is None."""
    if _sink is None or parent is None:
        yield
        return
    with parent.child(name).current():
        yield


def trace_id(span: Span | None) -> str | None:
    return None if span is None else format(span.trace_id, "032x")


def batch(parents: list[Any], enqueued_ns: list[int], work: Callable[[], Any]) -> Callable[[], Any]:
    """`work` (a batch, run in a worker thread) inside a `batch` span: its parent the first request's span, linked
    to the others', after a `queue` span per request from when it was queued; the requests' trace ids are set for
    the log rows the batch makes (`batch_traces`)."""
    if _sink is None or not any(p is not None for p in parents):
        return work
    now = time.time_ns()
    for parent, queued in zip(parents, enqueued_ns, strict=True):
        if parent is not None:
            parent.child("queue", start=queued).end(now)
    first = next(p for p in parents if p is not None)
    links: list[tuple[int, int, dict[str, Any]]] | None = [
        (p.trace_id, p.span_id, {}) for p in parents if p is not None and p is not first
    ] or None
    traces = [trace_id(p) for p in parents]

    def traced() -> Any:
        span = first.child("batch", links=links, attributes={"finalmile.requests": len(parents)})
        try:
            with _carrying(traces, span):
                result = work()
        except BaseException as exc:
            span.failed(exc)
            span.end()
            raise
        if not inspect.isawaitable(result):
            span.end()
            return result

        async def hop() -> Any:  # a Ray front's call to its replica: the span lasts until the answer is back
            with _carrying(traces, span), span.current():  # the call sends the trace ids on (`carried`), for the
                return await result  # replica's log rows

        return hop()

    return traced


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A span for one pipeline step (or the log) under the current batch's span; nothing when off."""
    parent = _current.get()
    if _sink is None or parent is None:  # only inside a batch traced here: never a trace of its own
        yield
        return
    with parent.child(name).current():
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
def _carrying(traces: list[str | None], span: Span | None = None) -> Iterator[None]:
    """The trace ids of the batch this block runs, for the log rows it makes (`batch_traces`); `span`: the batch's
    span, its steps' parent (`step`)."""
    token, current = _traces.set(traces), _current.set(span)
    try:
        yield
    finally:
        _current.reset(current)
        _traces.reset(token)
