"""Brokers, one module each, chosen by name from a table and imported when a stream names one (as runtimes are):
NATS JetStream, Redis Streams, RabbitMQ, Kafka (confluent-kafka). `base` holds what they share."""

from __future__ import annotations

import importlib

from finalmile.errors import MissingDependencyError
from finalmile.streaming.brokers.base import IN_FLIGHT, Broker, LastLogged, Message
from finalmile.streaming.config import DEFAULT_URLS, Endpoint

__all__ = ["IN_FLIGHT", "Broker", "LastLogged", "Message", "open_broker"]

# broker -> (module, class, the package it needs, the extra that installs it)
_BROKERS: dict[str, tuple[str, str, str, str]] = {
    "nats": ("finalmile.streaming.brokers.nats_jetstream", "NatsBroker", "nats-py", "streams"),
    "redis": ("finalmile.streaming.brokers.redis_streams", "RedisBroker", "redis", "streams"),
    "rabbitmq": ("finalmile.streaming.brokers.rabbitmq", "RabbitBroker", "aio-pika", "streams"),
    "kafka": ("finalmile.streaming.brokers.kafka", "KafkaBroker", "confluent-kafka", "kafka"),
}


def open_broker(endpoint: Endpoint, url: str | None, last_logged: LastLogged | None = None) -> Broker:
    """The broker an endpoint names, not yet connected; `url` is the resolved address (a stored connection's).
    `last_logged` tells Kafka which of a backlog's messages an earlier owner may have logged."""
    address = url or endpoint.url or DEFAULT_URLS[endpoint.broker]
    module, name, package, extra = _BROKERS[endpoint.broker]
    try:
        cls = getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as exc:
        raise MissingDependencyError(package, extra) from exc
    broker: Broker = cls(address, last_logged) if endpoint.broker == "kafka" else cls(address)
    return broker
