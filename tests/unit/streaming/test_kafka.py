"""Kafka's pieces that need no cluster: the URL read into librdkafka's settings, the offsets a batch commits, and
an unreachable cluster failing by name. The stream end to end runs against librdkafka's mock cluster in
tests/integration/test_streams.py (there is no Kafka broker on these machines)."""

from __future__ import annotations

import asyncio
import time

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
