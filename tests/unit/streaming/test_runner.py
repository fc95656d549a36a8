"""The stream runner's loop with a scripted broker: what happens when a batch fails with others in flight."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pytest

from finalmile.streaming.brokers import IN_FLIGHT, Message
from finalmile.streaming.config import stream_config
from finalmile.streaming.runner import StreamRunner


class _Broker:
    """Hands out IN_FLIGHT batches of one message; the first batch's acknowledgement fails, and publishing any
    later batch never finishes (a sink that hangs), so those are still in flight when the runner gives up."""

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.batches = [[Message(f"m{n}", b'{"x": 1}', False)] for n in range(IN_FLIGHT)]

    async def connect(self) -> None:
        pass

    async def subscribe(self, config: Any) -> None:
        pass

    async def fetch(self, count: int, timeout_s: float) -> list[Message]:
        await asyncio.sleep(0.01)
        return self.batches.pop(0) if self.batches else []

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        if items[0][0] != "m0":
            await asyncio.Event().wait()
        return [i for i, _ in items]

    async def ack(self, messages: list[Message]) -> None:
        raise ConnectionError("the broker went away")

    async def close(self) -> None:
        self.events.append("close")


def test_what_batches_in_flight_logged_is_durable_before_the_broker_hands_their_messages_on() -> None:
    events: list[str] = []
    broker = _Broker(events)
    config = stream_config(
        {
            "name": "s",
            "pipeline": "p",
            "source": {"broker": "redis", "subject": "in"},
            "sink": {"broker": "redis", "subject": "out"},
        }
    )

    async def infer(pipeline: str, table: pa.Table, log_it: bool, request_id: str) -> Any:
        events.append(f"logged {request_id}")
        return SimpleNamespace(table=pa.table({"y": [1]}), routes=[(None, 1)], request_id=request_id, version=1)

    runner = StreamRunner(config, broker, broker, infer, lambda p, ids: set(), lambda: events.append("durable"))
    with pytest.raises(ConnectionError, match="went away"):
        asyncio.run(runner.run())
    # Closing hands the unacknowledged messages to another worker, which looks them up in the log: whatever the
    # cancelled batches logged must be on disk by then, or that worker logs them a second time.
    last_logged = max(i for i, e in enumerate(events) if e.startswith("logged"))
    assert "durable" in events[last_logged : events.index("close")], events
