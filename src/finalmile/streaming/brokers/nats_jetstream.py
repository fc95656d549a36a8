"""NATS JetStream: a durable pull consumer per stream's consumer group; the stream sequence is the message id."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from finalmile.streaming.brokers.base import Message
from finalmile.streaming.config import StreamConfig


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
