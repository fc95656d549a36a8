"""What every broker is: a source (fetch a batch, acknowledge it) and a sink (publish with an id), and the message.

Every message carries an id that stays the same when the broker delivers it again (the JetStream stream sequence,
the Redis entry id, the AMQP `message_id`, Kafka's topic-partition-offset): it becomes the request id in the
inference log, which is what makes a redelivery recognisable. `redelivered` says the broker may have handed this
message out before.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from finalmile.streaming.config import StreamConfig

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
