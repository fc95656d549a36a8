"""Ended spans exported by a process of their own, so encoding them never runs on the serving core.

Measured on this 2-core machine (`bench/tracing.py`, and a request's six spans made and exported in a loop): the
OpenTelemetry SDK's `BatchSpanProcessor` encodes and posts spans in a thread of the serving process, ~60 µs of the GIL a
span (the OTLP encoder in Python, the resource hashed per span), and the SDK's spans cost ~37 µs each to make. The
serving process records its spans as plain values (`tracing.Span`) and `ProcessExport` keeps each ended one as a
tuple; a thread ships the tuples, pickled a batch at a time, to a child process (`python -m finalmile.tracing.export`)
that rebuilds them as the SDK's `ReadableSpan`s and hands them to the SDK's own `BatchSpanProcessor` with the SDK's
exporter (`otlp` or `console`): the same spans, batching and `OTEL_*` variables, off this process's GIL. A child that
dies costs the spans, never a request: they are dropped and counted (`dropped`), as the SDK drops spans when its queue
is full."""

from __future__ import annotations

import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import Any, BinaryIO

log = logging.getLogger(__name__)
_FRAME = struct.Struct("<I")
SHIP_EVERY_S = 0.2
"""How often the shipping thread sends what finished (sooner when `SHIP_AT` spans wait)."""
SHIP_AT = 512


class ProcessExport:
    """Ships ended spans' records (`tracing.Span.end`) to an exporting child."""

    def __init__(self, exporter: str) -> None:
        self.max_pending = int(os.environ.get("OTEL_BSP_MAX_QUEUE_SIZE", "2048"))
        self.dropped = 0
        self._pending: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()
        self._writing = threading.Lock()  # the shipping thread and a flush: one frame at a time on the pipe
        self._wake = threading.Event()
        self._stopped = False
        self._child: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "finalmile.tracing.export", exporter], stdin=subprocess.PIPE
        )
        self._thread = threading.Thread(target=self._ship_forever, name="finalmile-span-shipper", daemon=True)
        self._thread.start()

    def add(self, record: tuple[Any, ...]) -> None:
        if self._child is None:  # the child ended: nothing can export it
            self.dropped += 1
            return
        with self._lock:
            if len(self._pending) >= self.max_pending:
                self.dropped += 1
                return
            self._pending.append(record)
            full = len(self._pending) >= SHIP_AT
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Ship what waits now (the child exports it with its batch processor's schedule)."""
        self._ship()

    def shutdown(self) -> None:
        """Ship what is left and let the child export it and end (waiting at most 30 s for it)."""
        self._stopped = True
        self._wake.set()
        self._thread.join(timeout=5)
        self._ship()
        child, self._child = self._child, None
        if child is not None and child.stdin is not None:
            try:
                child.stdin.close()  # end of input: the child flushes its processor and exits
                child.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                child.kill()
                child.wait()

    def _ship_forever(self) -> None:
        while not self._stopped:
            self._wake.wait(SHIP_EVERY_S)
            self._wake.clear()
            self._ship()

    def _ship(self) -> None:
        with self._writing:
            with self._lock:
                batch, self._pending = self._pending, []
            child = self._child
            if not batch:
                return
            if child is None:  # the child ended: nothing can export them
                self.dropped += len(batch)
            else:
                self._send(child, batch)

    def _send(self, child: subprocess.Popen[bytes], batch: list[tuple[Any, ...]]) -> None:
        assert child.stdin is not None
        data = pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            child.stdin.write(_FRAME.pack(len(data)) + data)
            child.stdin.flush()
        except (OSError, ValueError):  # the child died (or was closed): the spans are lost, the server goes on
            self.dropped += len(batch)
            if child.poll() is not None and self._child is child:
                log.warning("the span exporting process ended (code %s): spans are dropped", child.returncode)
                self._child = None
                _close(child)


def _close(child: subprocess.Popen[bytes]) -> None:
    """Let go of a dead child's pipe (what it held unwritten is lost with it) and reap it."""
    assert child.stdin is not None
    try:
        child.stdin.close()
    except OSError:  # a broken pipe's buffered bytes: dropped with the child
        pass
    child.wait()


def rebuild(record: tuple[Any, ...], resource: Any, scope: Any) -> Any:
    """The SDK's `ReadableSpan` of a record made by `tracing.Span.end`."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

    name, trace_id, span_id, parent, start, end, attributes, events, links, kind, code, description, state = record
    sampled = TraceFlags(TraceFlags.SAMPLED)
    state = TraceState(list(state)) if state else None
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=sampled, trace_state=state)
    parent_context = None
    if parent is not None:
        parent_context = SpanContext(trace_id, parent[0], is_remote=parent[1], trace_flags=sampled, trace_state=state)
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent_context,
        resource=resource,
        attributes=attributes,
        events=[Event(n, a, t) for n, t, a in events or ()],
        links=[Link(SpanContext(t, s, is_remote=False, trace_flags=sampled), a) for t, s, a in links or ()],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def export_forever(source: BinaryIO, exporter_name: str) -> None:
    """The child: rebuild each shipped span and give it to the SDK's batch processor and exporter, until the
    parent closes the pipe (then flush and end)."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    if exporter_name == "console":
        exporter: Any = ConsoleSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    processor = BatchSpanProcessor(exporter)
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", "finalmile")})
    scope = InstrumentationScope("finalmile")
    try:
        while len(header := source.read(_FRAME.size)) == _FRAME.size:
            (size,) = _FRAME.unpack(header)
            if len(frame := source.read(size)) < size:  # the parent died mid-frame: what came whole is exported
                break
            for record in pickle.loads(frame):
                processor.on_end(rebuild(record, resource, scope))
    finally:
        processor.shutdown()


if __name__ == "__main__":
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal reaches the server's whole group: the server
    export_forever(sys.stdin.buffer, sys.argv[1] if len(sys.argv) > 1 else "otlp")  # stops, then closes our pipe
