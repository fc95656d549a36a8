"""A stream's loop: fetch a batch of messages, infer each through the data plane (the adaptive batcher joins them),
publish the outputs, make the log rows durable, and only then acknowledge the batch to the broker.

Exactly-once logging over at-least-once delivery: a message the broker may have delivered before (`redelivered`)
is looked up in the inference log by its id first; if a previous run logged it (and died before the
acknowledgement), its output is published again but not logged twice. A message that fails `max_attempts` times
goes to the dead-letter subject with its error and is acknowledged, so it never blocks the rest.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pyarrow as pa

from finalmile.errors import FinalmileError
from finalmile.jobs.runs import runner_name
from finalmile.pipelines.loaded import RequestResult
from finalmile.serving.codecs import arrow as arrow_codec
from finalmile.serving.codecs import records
from finalmile.streaming.brokers import IN_FLIGHT, Broker, Message
from finalmile.streaming.config import StreamConfig

log = logging.getLogger(__name__)

Infer = Callable[[str, pa.Table, bool, str], Awaitable[RequestResult]]
"""(pipeline, table, log, request id) -> the result: the data plane's `infer`."""
InferEach = Callable[[str, pa.Table, list[str]], Awaitable[list[RequestResult]]]
"""(pipeline, table, request ids) -> one logged result per row: the data plane's `infer_each`."""


@dataclass
class Counters:
    """What `streams status` shows: totals since this runner started, and its rate over the last report."""

    received: int = 0
    processed: int = 0
    logged_before: int = 0
    failures: int = 0
    dead_lettered: int = 0
    last_error: str | None = None
    started: float = field(default_factory=time.time)

    def snapshot(self, rate: float, lag: int | None) -> dict[str, Any]:
        return {
            "consumer": runner_name(),
            "received": self.received,
            "processed": self.processed,
            "logged_before": self.logged_before,
            "failures": self.failures,
            "dead_lettered": self.dead_lettered,
            "messages_per_s": round(rate, 1),
            "lag": lag,
            "last_error": self.last_error,
            "running_since": self.started,
        }


class StreamRunner:
    """Runs one stream until cancelled. `logged(pipeline, ids)` says which ids the log already holds; `durable()`
    returns once every row logged so far is on disk."""

    def __init__(
        self,
        config: StreamConfig,
        source: Broker,
        sink: Broker,
        infer: Infer,
        logged: Callable[[str, list[str]], set[str]],
        durable: Callable[[], None],
        infer_each: InferEach | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.sink = sink
        self.infer = infer
        self.infer_each = infer_each
        self.logged = logged
        self.durable = durable
        self.counters = Counters()

    async def run(self) -> None:
        config = self.config
        await self.source.connect()
        if self.sink is not self.source:
            await self.sink.connect()
        await self.source.subscribe(config)
        in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
        try:
            while True:
                messages = await self.source.fetch(config.batch_size, config.max_delay_ms / 1000)
                if not messages:
                    continue
                # Several batches at once: this one is fetched and scored while the ones before it wait on the
                # sink and the log's fsync. Acknowledgements stay in fetch order (RabbitMQ acknowledges "up to",
                # Kafka commits an offset), so each batch acknowledges only after the one before it has.
                in_flight.append(asyncio.create_task(self.handle(messages, after=in_flight[-1] if in_flight else None)))
                if len(in_flight) >= IN_FLIGHT:
                    await in_flight.popleft()
        finally:
            for task in in_flight:
                task.cancel()
            for task in in_flight:
                with contextlib.suppress(BaseException):
                    await task
            # What those logged reaches the disk before the broker hands their messages to another worker (at the
            # close): that worker then finds them in the log, instead of logging them a second time.
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self.durable)
            await self.source.close()
            if self.sink is not self.source:
                await self.sink.close()

    async def handle(self, messages: list[Message], after: asyncio.Task[None] | None = None) -> None:
        """One batch, end to end; raises (leaving the batch unacknowledged, to be delivered again) only when the
        sink or the log cannot take it, or when the batch before it (`after`, acknowledged first) failed."""
        self.counters.received += len(messages)
        again = [m.id for m in messages if m.redelivered]
        seen = await asyncio.to_thread(self.logged, self.config.pipeline, again) if again else set()
        self.counters.logged_before += len(seen)
        table = self._decode_batch(messages)
        outcomes = await self._together(messages, table) if table is not None and not seen else None
        if outcomes is None:  # message by message: each fails (and is retried, dead-lettered) alone
            tables = [None if table is None else table.slice(i, 1) for i in range(len(messages))]
            outcomes = await asyncio.gather(
                *(self._attempts(m, t, m.id not in seen) for m, t in zip(messages, tables, strict=True))
            )
        published = [(m.id, out) for m, (out, _) in zip(messages, outcomes, strict=True) if out is not None]
        dead = [
            (m.id, _dead_letter(m, error)) for m, (out, error) in zip(messages, outcomes, strict=True) if out is None
        ]
        if published:
            await self.sink.publish(self.config.sink.subject, published)
        if dead:
            await self.source.publish(self.config.dead_letter_subject, dead)
        await asyncio.to_thread(self.durable)
        if after is not None:
            await after
        await self.source.ack(messages)
        self.counters.processed += len(published)
        self.counters.dead_lettered += len(dead)

    async def _attempts(self, message: Message, table: pa.Table | None, log_it: bool) -> tuple[bytes | None, str]:
        """The encoded output, or None and the last error after `max_attempts` failures."""
        error = ""
        for attempt in range(self.config.max_attempts):
            if attempt:
                await asyncio.sleep(0.01 * 2**attempt)
            try:
                table = table if table is not None and not attempt else self._decode(message.data)
                result = await self.infer(self.config.pipeline, table, log_it, message.id)
                return self._encode(message, result), ""
            except Exception as exc:
                error = exc.message if isinstance(exc, FinalmileError) else f"{type(exc).__name__}: {exc}"
                self.counters.failures += 1
                self.counters.last_error = f"message {message.id}: {error}"
        log.warning("stream %s: message %s failed %d times: %s", self.config.name, message.id, attempt + 1, error)
        return None, error

    async def _together(self, messages: list[Message], table: pa.Table) -> list[tuple[bytes | None, str]] | None:
        """The whole batch as one inference, a request per message (one conform, one run, one split instead of
        one of each per message); None when it fails as a whole, and the caller goes message by message."""
        if self.infer_each is None:
            return None
        try:
            results = await self.infer_each(self.config.pipeline, table, [m.id for m in messages])
        except Exception:
            return None
        rows = pa.concat_tables([r.table for r in results]).to_pylist()  # one conversion, not one per message
        return [(orjson.dumps(_output(r, r.routes[0][0], row)), "") for r, row in zip(results, rows, strict=True)]

    def _decode_batch(self, messages: list[Message]) -> pa.Table | None:
        """JSON records with the same fields, decoded as one table (a row per message): one Arrow conversion
        instead of one per message (which cost a third of a stream's time). None for anything else (Arrow
        payloads, differing fields, a value of the wrong type): those are decoded message by message, so each
        fails alone."""
        if self.config.format != "json" or len(messages) < 2:
            return None
        try:
            records = [orjson.loads(m.data) for m in messages]
        except orjson.JSONDecodeError:
            return None
        if not all(isinstance(r, dict) for r in records) or len({tuple(r) for r in records}) != 1:
            return None
        try:
            return pa.Table.from_pylist(records)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return None

    def _decode(self, data: bytes) -> pa.Table:
        if self.config.format == "arrow":
            return arrow_codec.decode(data)
        return records.decode(b"[" + data + b"]" if data.lstrip()[:1] == b"{" else data)

    def _encode(self, message: Message, result: RequestResult) -> bytes:
        if self.config.format == "arrow":
            meta = {"request_id": result.request_id, "pipeline_version": str(result.version)}
            return arrow_codec.encode(result.table.replace_schema_metadata(meta))
        rows = [
            _output(result, variant, row)
            for row, (variant, _) in zip(result.table.to_pylist(), result.routes, strict=True)
        ]
        return orjson.dumps(rows[0] if len(rows) == 1 and message.data.lstrip()[:1] == b"{" else rows)


def _output(result: RequestResult, variant: str | None, row: dict[str, Any]) -> dict[str, Any]:
    """One output record as the sink gets it: which request and version produced it, its variant, its values."""
    return {"request_id": result.request_id, "pipeline_version": result.version, "variant": variant} | row


def _dead_letter(message: Message, error: str) -> bytes:
    """What a dead letter carries: the message's id, the error, and the payload as it came (text where it is)."""
    try:
        payload: Any = message.data.decode()
    except UnicodeDecodeError:
        payload = message.data.hex()
    return orjson.dumps({"id": message.id, "error": error, "payload": payload})
