"""Redis Streams: a consumer group per stream, idle entries claimed from dead consumers; the entry id is the id."""

from __future__ import annotations

import json
import time
from typing import Any

from finalmile.jobs.runs import runner_name
from finalmile.streaming.brokers.base import Message
from finalmile.streaming.config import StreamConfig


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
