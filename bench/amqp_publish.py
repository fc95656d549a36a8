"""Publishing persistent messages to RabbitMQ from Python, three ways (figures in bench/README.md).

    .venv/bin/python bench/amqp_publish.py [--messages 20000]

aio-pika with a publisher confirm per message (what the RabbitMQ sink did), aiormq (aio-pika's own protocol layer)
with a confirm per message, and aiormq on a transacted channel with one commit per 500 messages (what the sink
does now). Each publishes `--messages` messages of ~100 bytes to a fresh durable queue in batches of 500, on uvloop
as `finalmile serve` runs; reports messages/s and this process's CPU per message. Needs RabbitMQ on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import aio_pika
import aiormq
import uvloop
from pamqp.commands import Basic

URL = "amqp://guest:guest@127.0.0.1:5672/"
BODY = b'{"request_id": "abcdef0123456789", "pipeline_version": 1, "variant": null, "label": 1, "p1": 0.73}'
BATCH = 500


def cpu() -> float:
    times = os.times()
    return times.user + times.system


async def aio_pika_confirms(queue: str, n: int) -> None:
    connection = await aio_pika.connect_robust(URL)
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue(queue, durable=True)
    exchange, persistent = channel.default_exchange, aio_pika.DeliveryMode.PERSISTENT
    for offset in range(0, n, BATCH):
        await asyncio.gather(
            *(
                exchange.publish(aio_pika.Message(BODY, message_id=str(i), delivery_mode=persistent), queue)
                for i in range(offset, offset + BATCH)
            )
        )
    await channel.queue_delete(queue)
    await connection.close()


async def aiormq_publish(queue: str, n: int, transacted: bool) -> None:
    connection = await aiormq.connect(URL)
    channel = await connection.channel(publisher_confirms=not transacted)
    await channel.queue_declare(queue, durable=True)
    if transacted:
        await channel.tx_select()
    for offset in range(0, n, BATCH):
        properties = [Basic.Properties(message_id=str(i), delivery_mode=2) for i in range(offset, offset + BATCH)]
        if transacted:
            for p in properties:
                await channel.basic_publish(BODY, routing_key=queue, properties=p)
            await channel.tx_commit()
        else:
            await asyncio.gather(*(channel.basic_publish(BODY, routing_key=queue, properties=p) for p in properties))
    await channel.queue_delete(queue)
    await connection.close()


async def main(n: int) -> None:
    ways = {
        "aio-pika, a confirm each": lambda q: aio_pika_confirms(q, n),
        "aiormq, a confirm each": lambda q: aiormq_publish(q, n, False),
        "aiormq, transacted, a commit per 500": lambda q: aiormq_publish(q, n, True),
    }
    for round_ in range(2):
        for name, way in ways.items():
            started, used = time.perf_counter(), cpu()
            await way(f"bench.amqp.{uuid.uuid4().hex[:8]}")
            seconds = time.perf_counter() - started
            print(f"round {round_ + 1}, {name}: {n / seconds:,.0f} msg/s, {(cpu() - used) / n * 1e6:.0f} µs CPU/msg")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=20_000)
    uvloop.install()
    asyncio.run(main(parser.parse_args().messages))
