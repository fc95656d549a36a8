"""Kafka's consumer group under a rebalance, against librdkafka's mock cluster (no Kafka broker on these
machines): a second worker joins while the first is mid-stream, with batches in flight.

The workers follow the stream runner's contract with the broker: a message flagged `redelivered` is looked up in
the log before it is scored, rows become durable before the acknowledgement, and acknowledgements go in fetch
order. Each message must then be logged exactly once: one handed to two workers at once, or handled before and
not flagged, is logged twice; one lost is never logged."""

from __future__ import annotations

import asyncio
import collections
import random
import threading
import time
import uuid
from types import SimpleNamespace

import pytest

kafka = pytest.importorskip("confluent_kafka", reason="pip install 'finalmile[kafka]'")

from finalmile.streaming.brokers import IN_FLIGHT, Message  # noqa: E402
from finalmile.streaming.brokers.kafka import KafkaBroker  # noqa: E402

SENT = 30_000


class Log:
    """The inference log as the runner sees it: ids whose rows are durable, and how often each was logged."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rows: collections.Counter[str] = collections.Counter()
        self.by_worker: collections.Counter[str] = collections.Counter()

    def logged(self, ids: list[str]) -> set[str]:
        with self.lock:
            return {i for i in ids if i in self.rows}

    def last_offsets(self, topic: str) -> dict[int, int]:
        with self.lock:
            places = [i.rsplit("-", 2)[1:] for i in self.rows]
        last: dict[int, int] = {}
        for partition, offset in places:
            last[int(partition)] = max(last.get(int(partition), -1), int(offset))
        return last

    def write(self, worker: str, ids: list[str]) -> None:
        with self.lock:
            self.rows.update(ids)
            self.by_worker[worker] += len(ids)


async def _worker(name: str, url: str, topic: str, log: Log, until: float) -> str | None:
    broker = KafkaBroker(url, log.last_offsets)
    await broker.connect()
    await broker.subscribe(SimpleNamespace(consumer_group="g", source=SimpleNamespace(subject=topic)))  # type: ignore[arg-type]

    async def handle(messages: list[Message], after: asyncio.Task[None] | None) -> None:
        seen = log.logged([m.id for m in messages if m.redelivered])
        await asyncio.sleep(random.uniform(0.005, 0.04))  # scoring and publishing
        log.write(name, [m.id for m in messages if m.id not in seen])  # durable
        if after is not None:
            await after
        await broker.ack(messages)

    in_flight: collections.deque[asyncio.Task[None]] = collections.deque()
    try:
        while len(log.rows) < SENT and time.monotonic() < until:
            messages = await broker.fetch(50, 0.02)
            if messages:
                in_flight.append(asyncio.create_task(handle(messages, in_flight[-1] if in_flight else None)))
                if len(in_flight) >= IN_FLIGHT:
                    await in_flight.popleft()
        for task in in_flight:
            await task
    finally:
        await broker.close()
    return broker.last_error


def test_a_worker_joining_mid_stream_takes_a_share_and_no_message_is_logged_twice_or_lost() -> None:
    owner = kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    address = next(iter(owner.list_topics(timeout=10).brokers.values()))
    servers = f"{address.host}:{address.port}"
    topic = f"fm-group-{uuid.uuid4().hex[:8]}"
    producer = kafka.Producer({"bootstrap.servers": servers, "log_level": 3})

    def produce() -> None:  # a steady stream for ~15 s: it outlasts the rebalance (~8 s on the mock cluster)
        for n in range(SENT):
            producer.produce(topic, value=b"{}", key=str(n).encode())
            if n % 200 == 199:
                producer.flush()
                time.sleep(0.1)
        producer.flush()

    log = Log()
    until = time.monotonic() + 120
    errors: dict[str, str | None] = {}

    def run(name: str, start_after: int) -> None:
        while len(log.rows) < start_after:  # the second one joins while the first is mid-stream
            time.sleep(0.01)
        errors[name] = asyncio.run(_worker(name, f"kafka://{servers}?log_level=3", topic, log, until))

    threads = [threading.Thread(target=produce)]
    threads += [threading.Thread(target=run, args=(name, start)) for name, start in (("a", 0), ("b", 1500))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(owner.list_topics(topic, timeout=10).topics[topic].partitions) >= 2  # there was a share to take
    twice = {i: n for i, n in log.rows.items() if n > 1}
    assert not twice, f"{len(twice)} messages logged twice, e.g. {sorted(twice)[:3]} ({errors})"
    assert len(log.rows) == SENT, f"{SENT - len(log.rows)} messages never logged ({errors})"
    assert log.by_worker["a"] > 0 and log.by_worker["b"] > 0, log.by_worker
