"""One class per broker, each both a source (fetch a batch, acknowledge it) and a sink (publish with an id).

Every message carries an id that stays the same when the broker delivers it again (the JetStream stream sequence,
the Redis entry id, the AMQP `message_id`, Kafka's topic-partition-offset in `streaming/kafka.py`): it becomes the
request id in the inference log, which is what makes a redelivery recognisable. `redelivered` says the broker may
have handed this message out before.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from finalmile.jobs.runs import runner_name
from finalmile.streaming.config import DEFAULT_URLS, Endpoint, StreamConfig

LastLogged = Callable[[str], dict[int, int]]
"""Kafka topic -> per partition, the highest offset the stream's log holds (`LogReader.last_offsets`)."""

IN_FLIGHT = 4
"""Batches a stream's runner has in flight at once: one is scored while the ones before it wait on the sink's
commit and the log's fsync (RabbitMQ: 4,991 / 5,069-5,389 / 5,632-5,823 messages/s with 2 / 3 / 4,
bench/README.md). Each source's prefetch holds one batch more."""


@dataclass
class Message:
    """One message: its stable id, its payload, and whether it may have been delivered before."""

    id: str
    data: bytes
    redelivered: bool
    handle: Any = None


class Broker(Protocol):
    """What a stream needs of a broker; `subscribe` before `fetch`."""

    async def connect(self) -> None: ...

    async def subscribe(self, config: StreamConfig) -> None: ...

    async def fetch(self, count: int, timeout_s: float) -> list[Message]: ...

    async def ack(self, messages: list[Message]) -> None: ...

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        """Publish (id, payload) pairs durably; returns the ids a consumer of `subject` will see."""

    async def lag(self) -> int | None: ...

    async def close(self) -> None: ...


def open_broker(endpoint: Endpoint, url: str | None, last_logged: LastLogged | None = None) -> Broker:
    """The broker an endpoint names, not yet connected; `url` is the resolved address (a stored connection's).
    `last_logged` tells Kafka which of a backlog's messages an earlier owner may have logged."""
    address = url or endpoint.url or DEFAULT_URLS[endpoint.broker]
    if endpoint.broker == "nats":
        return NatsBroker(address)
    if endpoint.broker == "redis":
        return RedisBroker(address)
    if endpoint.broker == "kafka":
        from finalmile.streaming.kafka import KafkaBroker

        return KafkaBroker(address, last_logged)
    return RabbitBroker(address)


class NatsBroker:
    """NATS JetStream: a durable pull consumer shared by every worker; a message not acknowledged within the ack
    wait (30 s) is delivered again. Publishing sets `Nats-Msg-Id`, so JetStream drops a republished duplicate."""

    ACK_WAIT_S = 30.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._nc: Any = None
        self._js: Any = None
        self._sub: Any = None
        self._streams: set[str] = set()

    async def connect(self) -> None:
        import nats

        self._nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=-1)
        self._js = self._nc.jetstream()

    async def _ensure_stream(self, subject: str) -> str:
        """The JetStream stream that holds `subject`, made (named after the subject) if none does."""
        from nats.js.errors import NotFoundError

        try:
            name: str = await self._js.find_stream_name_by_subject(subject)
        except NotFoundError:
            name = re.sub(r"[^A-Za-z0-9_-]", "_", subject).upper()
            await self._js.add_stream(name=name, subjects=[subject])
        self._streams.add(subject)
        return name

    async def subscribe(self, config: StreamConfig) -> None:
        from nats.js.api import AckPolicy, ConsumerConfig

        subject = config.source.subject
        stream = await self._ensure_stream(subject)
        durable = re.sub(r"[^A-Za-z0-9_-]", "_", config.consumer_group)
        consumer = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ACK_WAIT_S, max_ack_pending=-1)
        self._sub = await self._js.pull_subscribe(subject, durable=durable, stream=stream, config=consumer)

    async def fetch(self, count: int, timeout_s: float) -> list[Message]:
        from nats.errors import TimeoutError as NatsTimeout

        try:
            got = await self._sub.fetch(count, timeout=max(timeout_s, 0.05))
        except (NatsTimeout, asyncio.TimeoutError):
            return []
        return [
            Message(f"{m.metadata.stream}-{m.metadata.sequence.stream}", m.data, m.metadata.num_delivered > 1, m)
            for m in got
        ]

    async def ack(self, messages: list[Message]) -> None:
        await asyncio.gather(*(m.handle.ack() for m in messages))

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        if subject not in self._streams:
            await self._ensure_stream(subject)
        acks = await asyncio.gather(*(self._js.publish(subject, data, headers={"Nats-Msg-Id": i}) for i, data in items))
        return [f"{a.stream}-{a.seq}" for a in acks]

    async def lag(self) -> int | None:
        if self._sub is None:
            return None
        info = await self._sub.consumer_info()
        return int(info.num_pending) + int(info.num_ack_pending)

    async def close(self) -> None:
        if self._nc is not None:
            await self._nc.close()


class RedisBroker:
    """Redis Streams: a consumer group shared by every worker, each process its own consumer. Entries a dead
    consumer held for longer than `claim_idle_ms` are claimed (XAUTOCLAIM) and run again. A payload is the entry's
    `data` field, or, without one, the entry's fields as a JSON record."""

    CLAIM_EVERY_S = 1.0

    def __init__(self, url: str, consumer: str | None = None) -> None:
        self.url = url
        self._r: Any = None
        self._key = ""
        self._group = ""
        self._consumer = consumer or runner_name()  # this process: host and pid
        self._claim_idle_ms = 30_000
        self._claimed_at = 0.0

    async def connect(self) -> None:
        import redis.asyncio as aioredis

        self._r = aioredis.from_url(self.url)
        await self._r.ping()

    async def subscribe(self, config: StreamConfig) -> None:
        from redis.exceptions import ResponseError

        self._key, self._group = config.source.subject, config.consumer_group
        self._claim_idle_ms = config.claim_idle_ms
        try:
            await self._r.xgroup_create(self._key, self._group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def fetch(self, count: int, timeout_s: float) -> list[Message]:
        if time.monotonic() - self._claimed_at > self.CLAIM_EVERY_S:
            self._claimed_at = time.monotonic()
            claimed = await self._r.xautoclaim(
                self._key, self._group, self._consumer, self._claim_idle_ms, start_id="0-0", count=count
            )
            if claimed[1]:
                return [self._message(i, f, True) for i, f in claimed[1] if f is not None]
        got = await self._r.xreadgroup(
            self._group, self._consumer, {self._key: ">"}, count=count, block=max(1, int(timeout_s * 1000))
        )
        return [self._message(i, f, False) for _, entries in got or [] for i, f in entries]

    @staticmethod
    def _message(entry_id: bytes, fields: dict[bytes, bytes], redelivered: bool) -> Message:
        data = fields.get(b"data")
        if data is None:
            data = json.dumps({k.decode(): v.decode() for k, v in fields.items()}).encode()
        return Message(entry_id.decode(), data, redelivered)

    async def ack(self, messages: list[Message]) -> None:
        if messages:
            await self._r.xack(self._key, self._group, *[m.id for m in messages])

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        async with self._r.pipeline(transaction=False) as pipe:
            for i, data in items:
                pipe.xadd(subject, {"id": i, "data": data})
            return [entry.decode() for entry in await pipe.execute()]

    async def lag(self) -> int | None:
        if not self._key:
            return None
        for group in await self._r.xinfo_groups(self._key):
            if group["name"].decode() == self._group:
                return int(group.get("lag") or 0) + int(group.get("pending") or 0)
        return None

    async def close(self) -> None:
        if self._r is not None:
            await self._r.aclose()


class RabbitBroker:
    """RabbitMQ: a durable queue; a message unacknowledged when its channel closes (a dead worker) is delivered
    again, flagged `redelivered`. The id is the message's `message_id` (publishers should set it); without one, a
    hash of the body. Publishing marks messages persistent and returns once the broker has committed them."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._conn: Any = None
        self._channel: Any = None
        self._publisher: Any = None
        self._transacted: Any = None
        self._publishing = asyncio.Lock()
        self._queue_name = ""
        self._buffer: asyncio.Queue[Any] = asyncio.Queue()
        self._declared: set[str] = set()

    async def connect(self) -> None:
        import aio_pika

        self._conn = await aio_pika.connect_robust(self.url, timeout=5)
        self._channel = await self._conn.channel(publisher_confirms=False)  # consuming and acknowledging only

    async def subscribe(self, config: StreamConfig) -> None:
        await self._channel.set_qos(prefetch_count=max((IN_FLIGHT + 1) * config.batch_size, 10))
        self._queue_name = config.source.subject
        queue = await self._channel.declare_queue(self._queue_name, durable=True)
        self._declared.add(self._queue_name)
        await queue.consume(self._buffer.put, no_ack=False)

    async def fetch(self, count: int, timeout_s: float) -> list[Message]:
        try:
            first = await asyncio.wait_for(self._buffer.get(), max(timeout_s, 0.05))
        except TimeoutError:
            return []
        got = [first]
        deadline = time.monotonic() + timeout_s
        while len(got) < count:
            if self._buffer.empty():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                try:
                    got.append(await asyncio.wait_for(self._buffer.get(), remaining))
                except TimeoutError:
                    break
            else:
                got.append(self._buffer.get_nowait())
        return [
            Message(m.message_id or hashlib.sha256(m.body).hexdigest()[:32], m.body, bool(m.redelivered), m)
            for m in got
        ]

    async def ack(self, messages: list[Message]) -> None:
        if messages:  # delivered in order on one channel: acknowledging the last acknowledges all before it
            await max(messages, key=lambda m: m.handle.delivery_tag).handle.ack(multiple=True)

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        from pamqp.commands import Basic

        if subject not in self._declared:
            await self._channel.declare_queue(subject, durable=True)
            self._declared.add(subject)
        async with self._publishing:  # batches in flight publish in turn: each commit covers its own batch
            channel = await self._transaction_channel()
            for i, data in items:
                await channel.basic_publish(
                    data, routing_key=subject, properties=Basic.Properties(message_id=i, delivery_mode=2)
                )
            await channel.tx_commit()  # the broker has them all (persisted) when this returns
        return [i for i, _ in items]

    async def _transaction_channel(self) -> Any:
        """A channel of its own for publishing, in transaction mode: a batch is published and committed in one
        round trip, instead of a confirm (and a future, and aio-pika's message object) per message: 36-51 against
        57-118 µs of CPU a message here (bench/amqp_publish.py, bench/README.md). Its own, because
        acknowledgements on a transacted channel would wait for a commit. Selected again after a reconnect, which
        brings a new channel."""
        if self._publisher is None:
            self._publisher = await self._conn.channel(publisher_confirms=False)
        underlay = await self._publisher.get_underlay_channel()
        if underlay is not self._transacted:
            await underlay.tx_select()
            self._transacted = underlay
        return underlay

    async def lag(self) -> int | None:
        if not self._queue_name:
            return None
        queue = await self._channel.declare_queue(self._queue_name, passive=True)
        return int(queue.declaration_result.message_count or 0) + self._buffer.qsize()

    async def close(self) -> None:
        if self._conn is not None:
            await self._conn.close()
