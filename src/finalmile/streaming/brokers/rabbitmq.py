"""RabbitMQ: a durable queue per stream, published on a transacted channel; the AMQP `message_id` is the id."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any

from finalmile.streaming.brokers.base import IN_FLIGHT, Message
from finalmile.streaming.config import StreamConfig


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
