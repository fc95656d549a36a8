"""Kafka as a stream source and sink, through confluent-kafka (librdkafka): `pip install 'finalmile[kafka]'`.

A consumer group shared by every worker (Kafka spreads the topic's partitions over them). Offsets are committed
only once a batch's outputs are published and its log rows are durable (auto-commit off), so a worker that dies
hands its uncommitted messages to another at the rebalance. A message's id is `topic-partition-offset`, the same
whenever it is delivered again. Publishing waits for every in-sync replica (`acks=all`, idempotent producer).

The URL is `kafka://HOST:PORT[,HOST:PORT…][?librdkafka.setting=value&…]`: the query's settings go to librdkafka
as they are (`security.protocol=SASL_SSL&sasl.mechanism=PLAIN&sasl.username=…&sasl.password=…`).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

from finalmile.errors import InvalidInputError, MissingDependencyError
from finalmile.jobs.runs import runner_name
from finalmile.streaming.brokers.base import LastLogged, Message
from finalmile.streaming.config import StreamConfig

T = TypeVar("T")
CONNECT_TIMEOUT_S = 5.0


def kafka_settings(url: str) -> dict[str, Any]:
    """librdkafka's settings from a `kafka://` URL: the bootstrap servers from its host list, the rest from its
    query."""
    parts = urlsplit(url)
    servers = parts.netloc.rpartition("@")[2]
    if parts.scheme != "kafka" or not servers:
        raise InvalidInputError(f"url: a Kafka URL is kafka://HOST:PORT[,HOST:PORT…], not {url!r}", {"field": "url"})
    return {"bootstrap.servers": servers} | dict(parse_qsl(parts.query))


def commit_offsets(messages: list[Message]) -> dict[tuple[str, int], int]:
    """The offset to commit per (topic, partition) once `messages` are done: one past the highest."""
    done: dict[tuple[str, int], int] = {}
    for m in messages:
        topic, partition, offset = m.handle
        done[(topic, partition)] = max(done.get((topic, partition), -1), offset + 1)
    return done


class KafkaBroker:
    """Kafka's consumer group and an idempotent producer. librdkafka's calls block, so they run in a thread.

    A rebalance hands a partition to another worker while this one may still score a batch of it; the other would
    then start from the last committed offset and score the same messages at the same time, before either has
    logged them. So when a partition is taken away, `on_revoke` (which the rebalance waits for) holds until this
    worker's messages of it are acknowledged (their log rows durable), up to `REVOKE_WAIT_S`, and commits them.

    Every commit is made on the consumer's own thread: in the revoke, or before the next `consume` for what `ack`
    noted. A commit from any other thread waits while a rebalance callback runs, and the revoke would wait for it
    in turn (each batch acknowledges only after the one before it). A commit may be refused while the group
    rebalances; the next owner then reads those messages again, finds them in the log, and only publishes them
    again."""

    REVOKE_WAIT_S = 30.0

    def __init__(self, url: str, last_logged: LastLogged | None = None) -> None:
        try:
            import confluent_kafka
        except ImportError:
            raise MissingDependencyError("confluent-kafka", "kafka") from None
        self._kafka = confluent_kafka
        self.url = url
        self._last_logged = last_logged
        self._settings = kafka_settings(url)
        self._producer: Any = None
        self._consumer: Any = None
        self._lock = threading.Lock()  # consume (and the commits before it), lag and close one at a time
        self._producing = threading.Lock()
        """The producer's own: a rebalance inside `consume` (holding `_lock`) waits for this worker's batches to be
        acknowledged, and each must publish first, so publishing never waits for `_lock`."""
        self._settled = threading.Condition()
        self._held: Counter[tuple[str, int]] = Counter()  # fetched, not yet acknowledged, per partition
        self._done: dict[tuple[str, int], int] = {}  # per partition, the offset that acknowledged messages commit
        self._committed_at: dict[tuple[str, int], int] = {}  # and the one last committed
        self.last_error: str | None = None
        self._owned: set[tuple[str, int]] = set()  # assigned to this consumer now
        self._revoked: set[tuple[str, int]] = set()
        """Partitions taken away during the `consume` call under way (its rebalance callbacks run inside it)."""
        self._next: dict[tuple[str, int], int] = {}
        """Per partition, one past the highest offset fetched since it was assigned: a partition taken away and
        given back within one `consume` call restarts from its last commit, delivering what was just fetched again."""
        self._handled_below: dict[tuple[str, int], float] = {}
        """Per partition, the offset below which an earlier owner may have logged messages when it was assigned:
        its end offset then (nobody can have fetched beyond it), and one past the highest offset the log holds.
        Only messages below it are looked up in the log; the ones after are new to every worker."""

    async def _call(self, fn: Callable[..., T], *args: Any, lock: threading.Lock | None = None) -> T:
        """`fn(*args)` in a thread, under the consumer's lock unless another is given."""

        def locked() -> T:
            with lock or self._lock:
                return fn(*args)

        return await asyncio.to_thread(locked)

    async def connect(self) -> None:
        settings = self._settings | {"enable.idempotence": True, "acks": "all", "client.id": runner_name()}
        self._producer = self._kafka.Producer(settings)
        try:  # librdkafka connects lazily: ask for the cluster's metadata so a wrong address fails here, by name
            await self._call(self._producer.list_topics, None, CONNECT_TIMEOUT_S)
        except self._kafka.KafkaException as exc:
            raise ConnectionError(f"cannot reach Kafka at {self._settings['bootstrap.servers']}: {exc}") from None

    async def subscribe(self, config: StreamConfig) -> None:
        settings = (
            {
                "group.id": config.consumer_group,
                "client.id": runner_name(),
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,  # a dead worker's partitions move on after 10 s, not librdkafka's 45
            }
            | self._settings
            | {"enable.auto.commit": False, "on_commit": self._committed}
        )
        self._consumer = self._kafka.Consumer(settings)
        self._consumer.subscribe([config.source.subject], on_assign=self._assigned, on_revoke=self._revoked_now)

    def _assigned(self, _: Any, partitions: list[Any]) -> None:
        """librdkafka's callback, inside `consume`: note where each partition's new messages begin."""
        logged = self._logged_below({p.topic for p in partitions})
        for p in partitions:
            key = (p.topic, p.partition)
            if key not in self._revoked:  # new to this worker: whatever it fetched of it before is long done
                self._next.pop(key, None)
            try:
                end: float = self._consumer.get_watermark_offsets(p, timeout=CONNECT_TIMEOUT_S)[1]
            except self._kafka.KafkaException:
                end = math.inf  # unknown: every message of it up to what the log holds is looked up
            self._handled_below[key] = min(end, logged.get(key, 0) if logged is not None else math.inf)
            self._owned.add(key)

    def _logged_below(self, topics: set[str]) -> dict[tuple[str, int], int] | None:
        """Per partition of `topics`, one past the highest offset the log holds; None when that is unknown."""
        if self._last_logged is None:
            return None
        try:
            return {(t, p): o + 1 for t in topics for p, o in self._last_logged(t).items()}
        except Exception as exc:  # raised in librdkafka's callback it would be lost: noted, and the end offset used
            self.last_error = f"could not read the log's last offsets: {exc}"
            return None

    def _revoked_now(self, _: Any, partitions: list[Any]) -> None:
        """librdkafka's callback, inside `consume`: wait for this worker's messages of `partitions` to be
        acknowledged, then commit them before the partitions move on."""
        keys = {(p.topic, p.partition) for p in partitions}
        with self._settled:
            self._settled.wait_for(lambda: not any(self._held[k] for k in keys), timeout=self.REVOKE_WAIT_S)
            for key in keys:
                self._held.pop(key, None)
        try:
            self._commit(keys, wait=True)
        except self._kafka.KafkaException as exc:  # raised in librdkafka's callback it would be lost: noted
            self._committed(exc.args[0], [])
        for key in keys:
            self._done.pop(key, None)
            self._committed_at.pop(key, None)
        self._owned -= keys
        self._revoked |= keys

    def _commit(self, keys: set[tuple[str, int]], wait: bool = False) -> None:
        """Commits what was acknowledged of `keys` since their last commit; on the consumer's thread only."""
        with self._settled:
            offsets = {k: o for k, o in self._done.items() if k in keys and o > self._committed_at.get(k, -1)}
            self._committed_at |= offsets
        if offsets:
            self._consumer.commit(
                offsets=[self._kafka.TopicPartition(*k, o) for k, o in offsets.items()], asynchronous=not wait
            )

    def _committed(self, error: Any, partitions: list[Any]) -> None:
        """librdkafka's report on a commit: a refusal is noted (the partition's next owner reads those messages
        again, finds them logged and publishes them again); nothing else is to be done about it."""
        if error is not None:
            self.last_error = f"commit refused, the messages are read again by the partition's next owner: {error}"

    async def fetch(self, count: int, timeout_s: float) -> list[Message]:
        def consume() -> list[Any]:
            self._commit(self._owned)
            self._revoked = set()
            return self._consumer.consume(count, max(timeout_s, 0.05))

        messages = []
        for m in await self._call(consume):
            error = m.error()
            if error is not None:
                # librdkafka recovers from all but fatal errors itself (a topic not made yet, a broker
                # restarting): those are reported and fetching goes on.
                if error.fatal():
                    raise self._kafka.KafkaException(error)
                self.last_error = str(error)
                continue
            key, offset = (m.topic(), m.partition()), m.offset()
            if key not in self._owned:
                # Fetched before a rebalance inside this very call took its partition away (librdkafka returns
                # them all the same): the new owner reads it from the last commit, so it is not ours to score. The
                # revoke could not wait for these, not yet held; scoring them too logged a few messages twice.
                continue
            if offset < self._next.get(key, 0):
                continue  # the partition came back within this call and restarted from its commit: fetched already
            self._next[key] = offset + 1
            redelivered = offset < self._handled_below.get(key, math.inf)
            messages.append(Message(f"{key[0]}-{key[1]}-{offset}", m.value() or b"", redelivered, (*key, offset)))
        with self._settled:
            self._held.update(m.handle[:2] for m in messages)
        return messages

    async def ack(self, messages: list[Message]) -> None:
        if not messages:
            return
        with self._settled:  # committed before the next fetch, or by a revoke waiting for these
            for key, offset in commit_offsets(messages).items():
                self._done[key] = max(self._done.get(key, 0), offset)
            for key in (m.handle[:2] for m in messages):
                if self._held[key] > 0:  # not a partition whose revoke stopped waiting for these (and forgot them)
                    self._held[key] -= 1
            self._settled.notify_all()

    async def publish(self, subject: str, items: list[tuple[str, bytes]]) -> list[str]:
        reports: list[Any] = [None] * len(items)

        def produce() -> None:
            for n, (i, data) in enumerate(items):

                def delivered(error: Any, message: Any, n: int = n) -> None:
                    reports[n] = error if error is not None else message

                while True:
                    try:
                        self._producer.produce(subject, value=data, key=i.encode(), on_delivery=delivered)
                        break
                    except BufferError:  # the local queue is full: let deliveries drain it
                        self._producer.poll(0.1)
            self._producer.flush(30)

        await self._call(produce, lock=self._producing)
        failed = [r for r in reports if r is None or isinstance(r, self._kafka.KafkaError)]
        if failed:
            raise ConnectionError(f"Kafka did not take {len(failed)} of {len(items)} messages: {failed[0]}")
        return [f"{m.topic()}-{m.partition()}-{m.offset()}" for m in reports]

    async def lag(self) -> int | None:
        if self._consumer is None:
            return None

        def behind() -> int:
            total = 0
            for tp in self._consumer.committed(self._consumer.assignment(), timeout=2):
                low, high = self._consumer.get_watermark_offsets(tp, timeout=2)
                total += high - (tp.offset if tp.offset >= 0 else low)
            return total

        return await self._call(behind)

    async def close(self) -> None:
        if self._consumer is not None:
            with self._settled:  # nothing more will be acknowledged: a revoke waiting (or the last) commits at once
                self._held.clear()
                self._settled.notify_all()
            await self._call(self._consumer.close)
        if self._producer is not None:
            await self._call(self._producer.flush, 10)
