"""Streams against the machine's real brokers (NATS JetStream, Redis Streams, RabbitMQ), run by a real `finalmile
serve`: outputs published, every row logged with its message id, a poison message dead-lettered without blocking
the rest, and a server killed with SIGKILL mid-stream loses no message and logs none twice after its restart."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular
from tests.integration.conftest import BROKER_PORTS, require_broker

X, y = tabular(200)
BROKERS = [*BROKER_PORTS, "kafka"]
KAFKA: dict[str, str] = {}
"""The address of this test process's Kafka: librdkafka's own mock cluster (no Kafka broker on these machines)."""


@pytest.fixture(scope="module")
def mock_kafka() -> Iterator[str]:
    """librdkafka's built-in mock cluster, listening on loopback while its owner (a producer here) lives; the
    server under test reaches it over TCP like any Kafka cluster."""
    kafka = pytest.importorskip("confluent_kafka", reason="pip install 'finalmile[kafka]'")
    owner = kafka.Producer({"test.mock.num.brokers": 1, "log_level": 3})
    broker = next(iter(owner.list_topics(timeout=10).brokers.values()))
    KAFKA["url"] = f"kafka://{broker.host}:{broker.port}"
    yield KAFKA["url"]
    KAFKA.clear()
    del owner


@pytest.fixture(params=BROKERS)
def broker(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    if name == "kafka":
        request.getfixturevalue("mock_kafka")
        return name
    require_broker(name)
    return name


# -- the test's own publisher and reader, straight on each broker's client library --------------------------------


async def _publish(broker: str, subject: str, bodies: list[bytes], first: int = 0) -> None:
    """`first` numbers RabbitMQ's message ids, so that several calls on one subject give distinct ids."""
    if broker == "kafka":
        from confluent_kafka import Producer

        producer = Producer({"bootstrap.servers": KAFKA["url"].removeprefix("kafka://"), "log_level": 3})
        for body in bodies:
            producer.produce(subject, body)
            producer.poll(0)
        assert producer.flush(30) == 0
    elif broker == "nats":
        import nats

        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        await js.add_stream(name=subject.replace(".", "_").upper(), subjects=[subject])
        for body in bodies:
            await js.publish(subject, body)
        await nc.close()
    elif broker == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url("redis://127.0.0.1:6379/0")
        async with r.pipeline(transaction=False) as pipe:
            for body in bodies:
                pipe.xadd(subject, {"data": body})
            await pipe.execute()
        await r.aclose()
    else:
        import aio_pika

        conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
        channel = await conn.channel()
        await channel.declare_queue(subject, durable=True)
        for i, body in enumerate(bodies, first):
            message = aio_pika.Message(
                body, message_id=f"{subject}-{i}", delivery_mode=aio_pika.DeliveryMode.PERSISTENT
            )
            await channel.default_exchange.publish(message, routing_key=subject)
        await conn.close()


async def _read(broker: str, subject: str) -> list[bytes]:
    """Every message on `subject` so far (RabbitMQ: those not read before, as reading takes them off the queue)."""
    if broker == "kafka":
        from confluent_kafka import Consumer, TopicPartition

        settings = {"bootstrap.servers": KAFKA["url"].removeprefix("kafka://"), "group.id": uuid.uuid4().hex}
        consumer = Consumer(settings | {"enable.auto.commit": False, "log_level": 3})
        topic = consumer.list_topics(subject, timeout=10).topics[subject]
        if topic.error is not None:
            consumer.close()
            return []
        ends = {p: consumer.get_watermark_offsets(TopicPartition(subject, p), timeout=10) for p in topic.partitions}
        consumer.assign([TopicPartition(subject, p, low) for p, (low, _) in ends.items()])
        total, got = sum(high - low for low, high in ends.values()), []
        deadline = time.monotonic() + 30
        while len(got) < total and time.monotonic() < deadline:
            got += [m.value() for m in consumer.consume(500, 0.5) if m.error() is None]
        consumer.close()
        return got
    if broker == "nats":
        import nats
        from nats.js.errors import NotFoundError

        nc = await nats.connect("nats://127.0.0.1:4222")
        js = nc.jetstream()
        try:
            stream = await js.find_stream_name_by_subject(subject)
        except NotFoundError:
            await nc.close()
            return []
        got: list[bytes] = []
        try:
            sub = await js.pull_subscribe(subject, durable=f"reader{uuid.uuid4().hex[:8]}", stream=stream)
            while True:
                try:
                    batch = await sub.fetch(500, timeout=0.5)
                except TimeoutError:  # nats-py raises its own subclass, or asyncio's on its lingering second pull
                    break
                got += [m.data for m in batch]
                await asyncio.gather(*(m.ack() for m in batch))  # a consumer holds at most 1,000 unacknowledged
        finally:
            await nc.close()
        return got
    if broker == "redis":
        import redis.asyncio as aioredis

        r = aioredis.from_url("redis://127.0.0.1:6379/0")
        entries = await r.xrange(subject)
        await r.aclose()
        return [fields[b"data"] for _, fields in entries]
    import aio_pika

    conn = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/")
    channel = await conn.channel()
    queue = await channel.declare_queue(subject, durable=True)
    got = []
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        got.append(message.body)
    await conn.close()
    return got


def _until(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _stream(client: Client, broker: str, subject: str) -> None:
    url = KAFKA["url"] if broker == "kafka" else None  # the others: each broker's default local address
    client.services.apply_stream(
        {
            "name": f"s-{broker}",
            "pipeline": "scoring",
            "source": {"broker": broker, "subject": f"{subject}.in", "url": url},
            "sink": {"broker": broker, "subject": f"{subject}.out", "url": url},
            "batch_size": 50,
            "max_delay_ms": 20,
            "claim_idle_ms": 500,
        }
    )


def _store(home: Path) -> Client:
    client = Client(home=home)
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
    client.build_pipeline("scoring").add_model_step("m:1").deploy()
    return client


def test_a_stream_scores_logs_and_dead_letters(tmp_path: Path, broker: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    subject = f"fm.t{uuid.uuid4().hex[:10]}"
    with _store(tmp_path / "home") as client:
        _stream(client, broker, subject)
    bodies = [json.dumps(r).encode() for r in X.head(40).to_dict(orient="records")]
    bodies.insert(7, b'{"x0": "not a number"}')  # the poison message, in the middle of the stream
    unscorable = X.head(1).to_dict(orient="records")[0] | {"x0": None}  # the same fields: its batch runs as one
    bodies.insert(30, json.dumps(unscorable).encode())
    asyncio.run(_publish(broker, f"{subject}.in", bodies))
    server = server_factory(tmp_path / "home")
    with Client(home=tmp_path / "home") as client:
        status = _until(
            lambda: (
                (client.services.streams.get(f"s-{broker}").status or {}).get("processed", 0) >= 40
                and client.services.streams.get(f"s-{broker}").status
            ),
            60,
            "40 messages processed",
        )
        assert status["dead_lettered"] == 2 and status["failures"] == 6  # each tried three times, then set aside
        outputs = [json.loads(b) for b in asyncio.run(_read(broker, f"{subject}.out"))]
        assert len(outputs) == 40 and {"score", "request_id", "pipeline_version"} <= set(outputs[0])
        dead = [json.loads(b) for b in asyncio.run(_read(broker, f"{subject}.in.dead"))]
        assert len(dead) == 2 and all("x0" in d["error"] for d in dead)
        assert {"not a number" in d["payload"] for d in dead} == {True, False}
        # Acknowledged once on disk (journaled); SQL from another process sees the rows at the server's next
        # compaction (every 10 s), as for served requests.
        count = "SELECT count(*) AS n FROM logs WHERE pipeline = 'scoring' AND status = 'ok'"
        _until(lambda: int(client.query(count).n[0]) >= 40, 30, "the 40 rows in SQL")
        logged = client.query("SELECT request_id, out_score FROM logs WHERE pipeline = 'scoring' AND status = 'ok'")
        assert sorted(logged.request_id) == sorted(o["request_id"] for o in outputs)  # logged by message id
        expected = LogisticRegression().fit(X, y).predict_proba(X.head(40))[:, 1]
        by_id = dict(zip(logged.request_id, logged.out_score, strict=True))
        scores = [by_id[o["request_id"]] for o in outputs]
        assert sorted(round(s, 4) for s in scores) == sorted(round(float(e), 4) for e in expected)
        paused = client.services.pause_stream(f"s-{broker}")
        assert paused.paused and [e.action for e in client.services.audit.entries()][-2:] == ["stream", "pause stream"]
    server.stop()


def test_a_server_killed_mid_stream_loses_nothing_and_logs_nothing_twice(
    tmp_path: Path,
    broker: str,
    server_factory,  # type: ignore[no-untyped-def]
) -> None:
    subject = f"fm.k{uuid.uuid4().hex[:10]}"
    rows = X.sample(3000, replace=True, random_state=1).to_dict(orient="records")
    with _store(tmp_path / "home") as client:
        _stream(client, broker, subject)
    asyncio.run(_publish(broker, f"{subject}.in", [json.dumps(r).encode() for r in rows]))
    first = server_factory(tmp_path / "home")
    with Client(home=tmp_path / "home") as client:
        _until(
            lambda: (client.services.streams.get(f"s-{broker}").status or {}).get("processed", 0) > 0,
            60,
            "the first server to process some messages",
        )
    os.kill(first.process.pid, signal.SIGKILL)  # mid-stream: batches in flight, some logged and not acknowledged
    first.process.wait()
    server_factory(tmp_path / "home", env={"FINALMILE_MONITOR_POLL_S": "3600"})
    with Client(home=tmp_path / "home") as client:

        def all_logged() -> bool:
            n = client.query("SELECT count(DISTINCT request_id) AS n FROM logs WHERE status = 'ok'").n[0]
            return int(n) >= len(rows)

        _until(all_logged, 120, f"all {len(rows)} messages logged after the restart")
        counts = client.query(
            "SELECT count(*) AS rows, count(DISTINCT request_id) AS ids FROM logs WHERE status = 'ok'"
        )
        assert int(counts.rows[0]) == int(counts.ids[0]) == len(rows)  # 0 lost, 0 logged twice
    # A batch is logged before its outputs are published, so the last ones may still be on their way: read the sink
    # until they are all there (RabbitMQ's reader takes what it reads off the queue, hence the union).
    outputs: set[str] = set()

    def all_published() -> bool:
        outputs.update(json.loads(b)["request_id"] for b in asyncio.run(_read(broker, f"{subject}.out")))
        return len(outputs) >= len(rows)

    _until(all_published, 60, f"all {len(rows)} outputs in the sink")
    assert len(outputs) == len(rows)  # every message's output reached the sink (at least once)


def test_two_workers_share_a_stream_through_the_brokers_consumer_group(
    tmp_path: Path,
    broker: str,
    server_factory,  # type: ignore[no-untyped-def]
) -> None:
    subject = f"fm.w{uuid.uuid4().hex[:10]}"
    bodies = [json.dumps(r).encode() for r in X.sample(250, replace=True, random_state=2).to_dict(orient="records")]
    with _store(tmp_path / "home") as client:
        _stream(client, broker, subject)
    server = server_factory(tmp_path / "home", args=("--workers", "2"))
    with Client(home=tmp_path / "home") as client:
        _until(
            lambda: (client.services.streams.get(f"s-{broker}").status or {}).get("live_consumers") == 2,
            60,
            "both workers' consumers to report",
        )

        def status() -> dict[str, Any]:
            return client.services.streams.get(f"s-{broker}").status or {}

        def shares() -> list[int]:
            return [c["processed"] for c in status().get("consumers", {}).values()]

        # A steady stream of 250 messages every 0.5 s, at least 4,000 in all, and on until both workers have taken
        # a share: one worker alone scores 4,000 messages in under a second, and Kafka's group hands the second
        # worker its partitions only once the first has rejoined (up to the session timeout, 10 s).
        sent, deadline = 0, time.monotonic() + 90
        while sent < 4000 or (min(shares() or [0]) == 0 and time.monotonic() < deadline):
            asyncio.run(_publish(broker, f"{subject}.in", bodies, first=sent))
            sent += len(bodies)
            time.sleep(0.5)

        final = _until(lambda: (s := status()).get("processed", 0) >= sent and s, 120, f"{sent} messages processed")
        per_consumer = [c["processed"] for c in final["consumers"].values()]
        assert len(per_consumer) == 2 and min(per_consumer) > 0, per_consumer  # both took a share
        # A rebalance (Kafka) or redelivery may hand a batch to the other worker: processed again, never logged twice.
        assert final["processed"] == sum(per_consumer) >= sent
    # Rows on disk reach SQL when a journal is compacted (every 10 s; 4,922 of 16,000 were still in journals when a
    # run queried at once): the workers compact theirs as they stop, and the journals of workers killed (a stop
    # past its time kills them all) are compacted when the next client opens the store.
    started = time.monotonic()
    exited = server.stop()
    stopping = f"stopped {'on its own' if exited else 'by SIGKILL'} after {time.monotonic() - started:.1f} s"
    # A worker may still be writing its last part when the server's own process has exited (its journal is then
    # alive, so a client leaves it be): the rows are counted until they are all there, or 30 s have passed.
    deadline = time.monotonic() + 30
    while True:
        with Client(home=tmp_path / "home") as client:
            sql = "SELECT count(*) AS rows, count(DISTINCT request_id) AS ids FROM logs WHERE status = 'ok'"
            counts = client.query(sql)
            rows, ids = int(counts.rows[0]), int(counts.ids[0])
        if rows >= sent or time.monotonic() > deadline:
            break
        time.sleep(1)
    # each message logged once, by one worker
    assert rows == ids == sent, f"{stopping}; server log: {server.log.read_text()[-3000:]}"
    outputs = [json.loads(b)["request_id"] for b in asyncio.run(_read(broker, f"{subject}.out"))]
    assert len(set(outputs)) == sent  # every message's output published (at least once)


def test_a_bad_stream_definition_is_refused_naming_the_field(tmp_path: Path) -> None:
    import httpx

    from finalmile.errors import InvalidInputError, NotFoundError
    from finalmile.http.server import running_server

    good = {
        "name": "s",
        "pipeline": "scoring",
        "source": {"broker": "redis", "subject": "in"},
        "sink": {"broker": "redis", "subject": "out"},
    }
    with _store(tmp_path / "home") as client:
        with pytest.raises(InvalidInputError, match=r"source\.broker"):
            client.services.apply_stream(good | {"source": {"broker": "mqtt", "subject": "in"}})
        with pytest.raises(InvalidInputError, match="batch_size"):
            client.services.apply_stream(good | {"batch_size": 0})
        with pytest.raises(NotFoundError, match="nope"):
            client.services.apply_stream(good | {"pipeline": "nope"})
        with running_server(client.services, auth=False) as url:
            bad = httpx.post(f"{url}/api/v1/streams", json=good | {"name": "bad name!"})
            assert bad.status_code == 422 and "name" in bad.json()["error"]
            created = httpx.post(f"{url}/api/v1/streams", json=good)
            assert created.status_code == 201 and created.json()["config"]["dead_letter"] is None
            assert [s["name"] for s in httpx.get(f"{url}/api/v1/streams").json()] == ["s"]
            assert httpx.post(f"{url}/api/v1/streams/s/pause").json()["paused"] is True
            assert httpx.delete(f"{url}/api/v1/streams/s").status_code == 200
            assert httpx.get(f"{url}/api/v1/streams/s").status_code == 404


def test_a_batch_logged_but_not_acknowledged_is_published_again_and_logged_once(tmp_path: Path) -> None:
    """The crash window between the durable log and the acknowledgement, made deterministic: the first runner
    dies right after its log rows are on disk; the second gets the same messages again from Redis (claimed from
    the dead consumer), finds them in the log, publishes their outputs and logs nothing twice."""
    require_broker("redis")
    from finalmile.streaming.brokers.redis_streams import RedisBroker
    from finalmile.streaming.config import stream_config
    from finalmile.streaming.runner import StreamRunner
    from finalmile.streaming.supervisor import stream_inference

    subject = f"fm.r{uuid.uuid4().hex[:10]}"
    bodies = [json.dumps(r).encode() for r in X.head(30).to_dict(orient="records")]
    asyncio.run(_publish("redis", f"{subject}.in", bodies))
    with _store(tmp_path / "home") as client:
        services = client.services
        config = stream_config(
            {
                "name": "crash",
                "pipeline": "scoring",
                "source": {"broker": "redis", "subject": f"{subject}.in"},
                "sink": {"broker": "redis", "subject": f"{subject}.out"},
                "claim_idle_ms": 100,
            }
        )

        class Died(Exception):
            pass

        def durable_then_die() -> None:
            services.logs.flush()
            raise Died

        infer, infer_each = stream_inference(services)  # as `finalmile serve` runs a stream

        async def once(durable: Callable[[], None], consumer: str) -> StreamRunner:
            broker = RedisBroker("redis://127.0.0.1:6379/0", consumer)  # two processes: two consumers of the group
            runner = StreamRunner(config, broker, broker, infer, services.reader.logged_ids, durable, infer_each)
            await broker.connect()
            await broker.subscribe(config)
            messages: list[Any] = []
            for _ in range(20):
                messages = await broker.fetch(100, 0.1)
                if messages:
                    break
                await asyncio.sleep(0.1)
            with contextlib.suppress(Died):
                await runner.handle(messages)
            await broker.close()
            return runner

        first = asyncio.run(once(durable_then_die, "first"))
        assert first.counters.processed == 0  # it died before acknowledging: nothing counts as done
        time.sleep(0.3)  # the claim idle time passes
        second = asyncio.run(once(services.logs.flush, "second"))
        assert second.counters.logged_before == 30 and second.counters.processed == 30
        sql = "SELECT count(*) AS rows, count(DISTINCT request_id) AS ids FROM logs WHERE status = 'ok'"
        counts = client.query(sql)
        assert int(counts.rows[0]) == int(counts.ids[0]) == 30
    outputs = [json.loads(b)["request_id"] for b in asyncio.run(_read("redis", f"{subject}.out"))]
    assert len(outputs) == 60 and len(set(outputs)) == 30  # published twice (at least once), logged once
