"""Streams through the 100-tree forest, per broker (figures in bench/README.md).

    .venv/bin/python bench/streams.py [--brokers nats redis rabbitmq kafka] [--messages 20000] [--rate 1000]
        [--seconds 10] [--backend local|ray]

`kafka` runs against librdkafka's mock cluster, started in this process (no Kafka broker here): the mock answers a
fetch only when `fetch.wait.max.ms` has passed (set to 10 ms here), and a new consumer group takes seconds to
join, which the backlog figure counts; neither says anything about a real Kafka cluster.

One `finalmile serve` process runs one stream per broker (one consumer, batches of up to 500 messages, JSON, one
record per message, logging on with the log made durable before each acknowledgement). `--backend ray`: the
server joins a local Ray cluster it starts and the forest runs in one Ray Serve replica, whose log rows are made
durable before it answers the stream. For each broker:

1. Throughput: `--messages` messages wait in the source; the stream is applied, and the bench reads the sink and
   reports messages/s from the first output to the last.
2. Latency: messages published at `--rate` per second for `--seconds`; end-to-end latency is the time from the
   publisher's confirmed send to the bench's receipt of the output on the sink, matched by message id.
3. The Parquet parts of the log written during both: every later query of the log opens each one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client
from finalmile.streaming.brokers import open_broker
from finalmile.streaming.config import Endpoint, StreamConfig

sys.path.insert(0, str(Path(__file__).parent))
from dashboard import serve  # noqa: E402
from runtimes import data  # noqa: E402

PORT = 8392
URLS: dict[str, str] = {}
"""Kafka's address: librdkafka's mock cluster in this process (no Kafka broker here), made by `main`."""


class Reader:
    """Consumes the sink, recording when each output (by request id) arrived."""

    def __init__(self, broker: str, subject: str) -> None:
        self.endpoint = Endpoint(broker=broker, subject=subject, url=URLS.get(broker))
        self.arrived: dict[str, float] = {}

    async def run(self, until: int, timeout_s: float) -> None:
        broker = open_broker(self.endpoint, None)
        await broker.connect()
        name = f"reader{uuid.uuid4().hex[:8]}"
        config = StreamConfig(name=name, pipeline="-", source=self.endpoint, sink=self.endpoint, claim_idle_ms=60_000)
        await broker.subscribe(config)
        deadline = time.monotonic() + timeout_s
        while len(self.arrived) < until and time.monotonic() < deadline:
            messages = await broker.fetch(1000, 0.05)
            now = time.perf_counter()
            for m in messages:
                self.arrived.setdefault(json.loads(m.data)["request_id"], now)
            await broker.ack(messages)
        await broker.close()


async def publish_all(broker: str, subject: str, bodies: list[bytes], rate: float | None) -> dict[str, float]:
    """Publish `bodies` (at `rate` per second, or as fast as the broker confirms); returns id -> time sent."""
    publisher = open_broker(Endpoint(broker=broker, subject=subject, url=URLS.get(broker)), None)
    await publisher.connect()
    sent: dict[str, float] = {}
    chunk = 10 if rate else 500
    started = time.perf_counter()
    for offset in range(0, len(bodies), chunk):
        if rate:
            await asyncio.sleep(max(0.0, started + offset / rate - time.perf_counter()))
        part = bodies[offset : offset + chunk]
        ids = await publisher.publish(subject, [(uuid.uuid4().hex, b) for b in part])
        now = time.perf_counter()
        sent.update((i, now) for i in ids)
    await publisher.close()
    return sent


def apply(home: Path, broker: str, subject: str, name: str) -> None:
    with Client(home=home) as client:
        client.services.apply_stream(
            {
                "name": name,
                "pipeline": "forest",
                "source": {"broker": broker, "subject": f"{subject}.in", "url": URLS.get(broker)},
                "sink": {"broker": broker, "subject": f"{subject}.out", "url": URLS.get(broker)},
                "batch_size": 500,
                "max_delay_ms": 5,
            }
        )


async def throughput(home: Path, broker: str, bodies: list[bytes]) -> float:
    subject = f"bench.t{uuid.uuid4().hex[:8]}"
    await publish_all(broker, f"{subject}.in", bodies, None)
    reader = Reader(broker, f"{subject}.out")
    apply(home, broker, subject, f"t-{broker}")
    await reader.run(len(bodies), 300)
    times = sorted(reader.arrived.values())
    assert len(times) == len(bodies), f"{broker}: {len(times)} of {len(bodies)} outputs arrived"
    return (len(times) - 1) / (times[-1] - times[0])


async def latency(home: Path, broker: str, bodies: list[bytes], rate: float) -> tuple[float, float, float]:
    subject = f"bench.l{uuid.uuid4().hex[:8]}"
    apply(home, broker, subject, f"l-{broker}")
    await publish_all(broker, f"{subject}.in", bodies[:1], None)  # the stream's runner connects and subscribes
    reader = Reader(broker, f"{subject}.out")
    reading = asyncio.create_task(reader.run(len(bodies), 120))
    await asyncio.sleep(3)
    sent = await publish_all(broker, f"{subject}.in", bodies[1:], rate)
    await reading
    delays = np.array([reader.arrived[i] - t for i, t in sent.items() if i in reader.arrived]) * 1000
    assert len(delays) == len(sent), f"{broker}: {len(delays)} of {len(sent)} outputs arrived"
    achieved = len(sent) / (max(sent.values()) - min(sent.values()))
    return float(np.percentile(delays, 50)), float(np.percentile(delays, 99)), achieved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--brokers", nargs="+", default=["nats", "redis", "rabbitmq", "kafka"])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--backend", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if "kafka" in args.brokers:
        from confluent_kafka import Producer

        mock = Producer({"test.mock.num.brokers": 1, "log_level": 3})  # the cluster lives while this does
        broker = next(iter(mock.list_topics(timeout=10).brokers.values()))
        URLS["kafka"] = f"kafka://{broker.host}:{broker.port}?log_level=3&fetch.wait.max.ms=10"
    X, y = data(5_000)
    forest = RandomForestClassifier(n_estimators=100, max_depth=8, n_jobs=1, random_state=0).fit(X, y)
    records = X.sample(args.messages, replace=True, random_state=1).to_dict(orient="records")
    bodies = [json.dumps(r).encode() for r in records]
    table = Table(title=f"streams through the forest on {args.backend}, one consumer, JSON, one record per message")
    columns = ("broker", "messages/s (backlog)", f"latency p50 ms @ {args.rate:,.0f}/s", "p99 ms", "rate achieved")
    for column in (*columns, "log parts written"):
        table.add_column(column, justify="right")
    with tempfile.TemporaryDirectory() as workdir:
        home = Path(workdir) / "home"
        with Client(home=home) as client:
            client.upload_model("forest", forest, sample=X.head(50))
            pipeline = client.build_pipeline("forest").add_model_step("forest:1")
            if args.backend == "local":
                pipeline.deploy()
            else:
                pipeline.create_version()
        server = serve(home, PORT, "--no-auth", "--backend", args.backend)
        try:
            if args.backend == "ray":  # deployed by the server, whose Ray cluster outlives this client
                url = f"http://127.0.0.1:{PORT}/api/v1/pipelines/forest/deploy"
                deployed = httpx.post(url, json={"backend": "ray", "replicas": 1}, timeout=120)
                assert deployed.status_code == 200, deployed.text
            for broker in args.brokers:
                parts = len(list((home / "logs").rglob("*.parquet")))
                rate = asyncio.run(throughput(home, broker, bodies))
                n = int(args.rate * args.seconds) + 1
                p50, p99, achieved = asyncio.run(latency(home, broker, bodies[:n], args.rate))
                parts = len(list((home / "logs").rglob("*.parquet"))) - parts  # small files cost every later query
                table.add_row(broker, f"{rate:,.0f}", f"{p50:.1f}", f"{p99:.1f}", f"{achieved:,.0f}/s", f"{parts:,}")
                print(f"{broker}: {rate:,.0f} messages/s; p50 {p50:.1f} ms, p99 {p99:.1f} ms at {achieved:,.0f}/s")
        finally:
            server.terminate()
            server.wait()
    Console().print(table)


if __name__ == "__main__":
    main()
