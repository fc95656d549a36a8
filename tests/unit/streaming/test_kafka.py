"""Kafka's pieces that need no cluster: the URL read into librdkafka's settings, the offsets a batch commits, and
an unreachable cluster failing by name. The stream end to end runs against librdkafka's mock cluster in
tests/integration/test_streams.py (there is no Kafka broker on these machines)."""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace
from typing import Any

import pytest

from finalmile.errors import InvalidInputError
from finalmile.streaming.brokers import Message

pytest.importorskip("confluent_kafka", reason="pip install 'finalmile[kafka]'")

from finalmile.streaming.kafka import KafkaBroker, commit_offsets, kafka_settings  # noqa: E402


def test_the_url_gives_the_bootstrap_servers_and_passes_settings_through() -> None:
    url = "kafka://k1:9092,k2:9092?security.protocol=SASL_SSL&sasl.mechanism=PLAIN&sasl.password=s3cret"
    assert kafka_settings(url) == {
        "bootstrap.servers": "k1:9092,k2:9092",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "PLAIN",
        "sasl.password": "s3cret",
    }
    for bad in ("nats://k1:4222", "kafka://", "k1:9092"):
        with pytest.raises(InvalidInputError, match="url: a Kafka URL"):
            kafka_settings(bad)


def test_a_batch_commits_one_past_its_highest_offset_per_partition() -> None:
    places = [("t", 0, 5), ("t", 1, 9), ("t", 0, 7), ("t", 0, 6), ("u", 0, 0)]
    batch = [Message(f"{t}-{p}-{o}", b"{}", False, (t, p, o)) for t, p, o in places]
    assert commit_offsets(batch) == {("t", 0): 8, ("t", 1): 10, ("u", 0): 1}


def test_an_unreachable_cluster_fails_naming_its_address() -> None:
    broker = KafkaBroker("kafka://127.0.0.1:1?log_level=0")
    started = time.monotonic()
    with pytest.raises(ConnectionError, match=r"cannot reach Kafka at 127\.0\.0\.1:1"):
        asyncio.run(broker.connect())
    assert time.monotonic() - started < 30


class _Record:
    def __init__(self, topic: str, partition: int, offset: int) -> None:
        self.place = (topic, partition, offset)

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.place[0]

    def partition(self) -> int:
        return self.place[1]

    def offset(self) -> int:
        return self.place[2]

    def value(self) -> bytes:
        return b"{}"


class _RebalancingConsumer:
    """Hands out records of partitions 0 and 1 after taking partition 0 away inside the same `consume` call, as
    librdkafka does when a rebalance comes while a batch is being collected."""

    def __init__(self, settings: dict[str, object]) -> None:
        self.on_revoke: Any = None

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.on_revoke = on_revoke

    def consume(self, count: int, timeout: float) -> list[_Record]:
        collected = [_Record("t", 0, 7), _Record("t", 1, 3)]
        self.on_revoke(self, [SimpleNamespace(topic="t", partition=0)])
        return collected


def test_records_of_a_partition_revoked_during_the_fetch_are_left_to_its_new_owner() -> None:
    broker = KafkaBroker("kafka://127.0.0.1:1")
    broker._kafka = SimpleNamespace(Consumer=_RebalancingConsumer)  # a rebalance on cue, not a cluster's timing
    config = SimpleNamespace(consumer_group="g", source=SimpleNamespace(subject="t"))

    async def fetched() -> list[Message]:
        await broker.subscribe(config)  # type: ignore[arg-type]
        return await broker.fetch(10, 0.1)

    assert [m.id for m in asyncio.run(fetched())] == ["t-1-3"]  # partition 0's record is not scored here too
