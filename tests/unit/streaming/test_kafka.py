"""Kafka's pieces that need no cluster: the URL read into librdkafka's settings, the offsets a batch commits, an
unreachable cluster failing by name, and what a fetch makes of rebalances played on cue by a scripted consumer.
The stream end to end runs against librdkafka's mock cluster in tests/integration/test_streams.py, and a worker
joining mid-stream in tests/integration/test_kafka_group.py (there is no Kafka broker on these machines)."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace
from typing import Any

import pytest

from finalmile.errors import InvalidInputError
from finalmile.streaming.brokers import Message

pytest.importorskip("confluent_kafka", reason="pip install 'finalmile[kafka]'")

from finalmile.streaming.brokers.kafka import KafkaBroker, commit_offsets, kafka_settings  # noqa: E402


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
    """A consumer whose `consume` plays a script: each call runs its rebalance callbacks and returns its records,
    as librdkafka does when a rebalance comes while a batch is being collected (records fetched before a revoke
    are returned all the same). Partitions hold offsets up to 10 when assigned."""

    script: list[list[Any]] = []

    def __init__(self, settings: dict[str, object]) -> None:
        self.callbacks: dict[str, Any] = {}
        self.commits: list[tuple[dict[tuple[str, int], int], bool]] = []

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke}

    def get_watermark_offsets(self, partition: Any, timeout: float) -> tuple[int, int]:
        return 0, 10

    def close(self) -> None:
        self.closed = True

    def commit(self, offsets: list[Any], asynchronous: bool) -> None:
        self.commits.append(({(o.topic, o.partition): o.offset for o in offsets}, asynchronous))

    def consume(self, count: int, timeout: float) -> list[_Record]:
        records = []
        for step in self.script.pop(0):
            if isinstance(step[0], str):  # ("assign" | "revoke", partitions)
                self.callbacks[step[0]](self, [SimpleNamespace(topic="t", partition=p) for p in step[1]])
            else:
                records.append(_Record("t", *step))
        return records


def _partition(topic: str, partition: int, offset: int) -> SimpleNamespace:
    return SimpleNamespace(topic=topic, partition=partition, offset=offset)


def _fetches(script: list[list[Any]], last_logged: Any = None) -> tuple[KafkaBroker, list[list[Message]]]:
    """The messages each fetch returns while `script` plays, and the broker."""
    broker = KafkaBroker("kafka://127.0.0.1:1", last_logged)
    broker._kafka = SimpleNamespace(Consumer=_RebalancingConsumer, TopicPartition=_partition)  # a rebalance on cue
    _RebalancingConsumer.script = [list(s) for s in script]
    config = SimpleNamespace(consumer_group="g", source=SimpleNamespace(subject="t"))

    async def fetched() -> list[list[Message]]:
        await broker.subscribe(config)  # type: ignore[arg-type]
        return [await broker.fetch(10, 0.1) for _ in script]

    return broker, asyncio.run(fetched())


def test_records_of_a_partition_revoked_during_the_fetch_are_left_to_its_new_owner() -> None:
    _, [got] = _fetches([[("assign", [0, 1]), (0, 7), (1, 3), ("revoke", [0])]])
    assert [m.id for m in got] == ["t-1-3"]  # partition 0's record is not scored here too


def test_a_partition_given_back_within_the_fetch_is_not_scored_twice_from_its_commit() -> None:
    # Revoked and assigned back in one call: librdkafka restarts the partition from its last commit (7), so 7 and
    # 8 come twice; and the fetch after it holds 8 again.
    script = [[("assign", [0]), (0, 7), (0, 8), ("revoke", [0]), ("assign", [0]), (0, 7), (0, 8), (0, 9)], [(0, 8)]]
    _, fetches = _fetches(script)
    assert [[m.id for m in f] for f in fetches] == [["t-0-7", "t-0-8", "t-0-9"], []]


def test_only_messages_older_than_the_assignment_may_have_been_handled_before() -> None:
    _, [got] = _fetches([[("assign", [0]), (0, 9), (0, 10), (0, 11)]])  # 10 offsets when it was assigned
    assert [(m.id, m.redelivered) for m in got] == [("t-0-9", True), ("t-0-10", False), ("t-0-11", False)]


def test_the_log_narrows_which_messages_of_a_backlog_may_have_been_handled_before() -> None:
    # Partition 0's log goes up to offset 5: 6 to 9 (still below the end offset, 10) are new to every worker.
    # Partition 1 has nothing logged. Without an answer from the log, the end offset is all there is to go by.
    script = [[("assign", [0, 1]), (0, 4), (0, 5), (0, 6), (1, 2)]]
    _, [got] = _fetches(script, lambda topic: {0: 5})
    assert [(m.id, m.redelivered) for m in got] == [
        ("t-0-4", True),
        ("t-0-5", True),
        ("t-0-6", False),
        ("t-1-2", False),
    ]

    def unreadable(topic: str) -> dict[int, int]:
        raise OSError("the log is not there")

    broker, [got] = _fetches(script, unreadable)
    assert all(m.redelivered for m in got) and "not there" in (broker.last_error or "")


def test_acknowledged_offsets_are_committed_on_the_consumers_thread_and_by_the_revoke() -> None:
    broker, [first] = _fetches([[("assign", [0, 1]), (0, 1), (1, 4)]])
    consumer = broker._consumer

    def fetch(*steps: Any) -> list[Message]:
        _RebalancingConsumer.script = [list(steps)]
        return asyncio.run(broker.fetch(10, 0.1))

    asyncio.run(broker.ack(first))
    assert consumer.commits == []  # not from here: a rebalance under way would hold this thread, and the revoke it
    second = fetch((0, 2))
    assert consumer.commits == [({("t", 0): 2, ("t", 1): 5}, True)]  # before the next fetch, without waiting
    revoking = threading.Thread(target=fetch, args=(("revoke", [0, 1]),))
    revoking.start()
    time.sleep(0.2)
    assert revoking.is_alive()  # the revoke waits for the batch in flight...
    asyncio.run(broker.ack(second))
    revoking.join(5)
    assert consumer.commits[-1] == ({("t", 0): 3}, False)  # ...and commits it before the partitions move on


def test_a_revoke_that_stopped_waiting_does_not_leave_a_late_acknowledgement_to_count_against_later_batches() -> None:
    broker, [first] = _fetches([[("assign", [0]), (0, 1)]])

    def fetch(*steps: Any) -> list[Message]:
        _RebalancingConsumer.script = [list(steps)]
        return asyncio.run(broker.fetch(10, 0.1))

    broker.REVOKE_WAIT_S = 0.05
    fetch(("revoke", [0]))  # gives up waiting for `first`
    asyncio.run(broker.ack(first))  # which is acknowledged only now
    broker.REVOKE_WAIT_S = 5.0
    later = fetch(("assign", [0]), (0, 2))
    revoking = threading.Thread(target=fetch, args=(("revoke", [0]),))
    revoking.start()
    time.sleep(0.2)
    assert revoking.is_alive()  # the late acknowledgement did not cancel out `later`
    asyncio.run(broker.ack(later))
    revoking.join(5)
    assert not revoking.is_alive()


def test_closing_releases_a_revoke_waiting_for_batches_that_will_never_be_acknowledged() -> None:
    # A worker shutting down cancels its batches in flight; a rebalance (another worker leaving) then waited the full
    # REVOKE_WAIT_S for them inside its last fetch, and the close behind it, holding the server's exit.
    broker, [first] = _fetches([[("assign", [0]), (0, 1)]])
    assert first
    _RebalancingConsumer.script = [[("revoke", [0])]]
    revoking = threading.Thread(target=lambda: asyncio.run(broker.fetch(10, 0.1)))
    revoking.start()
    time.sleep(0.2)
    assert revoking.is_alive()  # waiting for `first`, which its cancelled batch will never acknowledge
    started = time.monotonic()
    asyncio.run(broker.close())
    revoking.join(5)
    assert not revoking.is_alive() and broker._consumer.closed
    assert time.monotonic() - started < broker.REVOKE_WAIT_S / 3
