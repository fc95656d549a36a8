"""What a stream is: a deployed pipeline, a broker source and sink, and how messages are batched and retried.

Written as YAML (`finalmile streams apply FILE.yaml`), built from the SDK (`client.build_stream`) or sent as JSON
to `/api/v1/streams`; validated here once, so each field's error names it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from finalmile.config import read_yaml
from finalmile.errors import InvalidInputError
from finalmile.registry.store import check_plain_name

Broker = Literal["nats", "redis", "rabbitmq", "kafka"]

DEFAULT_URLS: dict[str, str] = {
    "nats": "nats://127.0.0.1:4222",
    "redis": "redis://127.0.0.1:6379/0",
    "rabbitmq": "amqp://guest:guest@127.0.0.1:5672/",
    "kafka": "kafka://127.0.0.1:9092",
}


class Endpoint(BaseModel):
    """Where messages come from or go: a broker, how to reach it, and the subject (NATS), stream key (Redis) or
    queue (RabbitMQ). `connection` names a stored connection whose URL is used instead of `url`."""

    model_config = {"extra": "forbid"}

    broker: Broker
    subject: str = Field(min_length=1, max_length=200)
    url: str | None = Field(None, max_length=2000)
    connection: str | None = Field(None, max_length=100)

    @model_validator(mode="after")
    def _one_address(self) -> Endpoint:
        if self.url is not None and self.connection is not None:
            raise ValueError("give the broker's url or a stored connection's name, not both")
        return self


class StreamConfig(BaseModel):
    """A stream's definition; `dead_letter` defaults to the source subject with `.dead` appended."""

    model_config = {"extra": "forbid"}

    name: str
    pipeline: str = Field(min_length=1, max_length=200)
    source: Endpoint
    sink: Endpoint
    format: Literal["json", "arrow"] = "json"
    """A message's payload: one JSON record (an object), or an Arrow IPC stream of one or more rows."""
    batch_size: int = Field(100, ge=1, le=10_000)
    """The most messages taken from the broker at once; each is its own request to the adaptive batcher."""
    max_delay_ms: float = Field(20.0, ge=0, le=60_000)
    """How long to wait for a batch to fill before running what has come."""
    max_attempts: int = Field(3, ge=1, le=100)
    """A message that fails this many times goes to the dead-letter subject with its error."""
    dead_letter: str | None = Field(None, min_length=1, max_length=200)
    group: str | None = Field(None, min_length=1, max_length=200)
    """The consumer group (NATS durable consumer, Redis group) shared by every worker; default `finalmile-NAME`."""
    claim_idle_ms: int = Field(30_000, ge=100, le=86_400_000)
    """Redis: a message delivered to a consumer that has not acknowledged it for this long is taken over (a worker
    that died). NATS and RabbitMQ redeliver on their own (ack wait; a closed channel)."""

    @field_validator("name")
    @classmethod
    def _plain(cls, name: str) -> str:
        return check_plain_name(name, "name")

    @property
    def dead_letter_subject(self) -> str:
        return self.dead_letter or f"{self.source.subject}.dead"

    @property
    def consumer_group(self) -> str:
        return self.group or f"finalmile-{self.name}"


def stream_config(data: object) -> StreamConfig:
    """Validate a stream definition from YAML, JSON or the SDK; a bad one is a 4xx naming each field."""
    if isinstance(data, StreamConfig):
        return data
    try:
        return StreamConfig.model_validate(data)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc']) or 'stream'}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError("invalid stream: " + "; ".join(problems), {"problems": problems}) from None


def load_stream_file(path: str | Path) -> StreamConfig:
    return stream_config(read_yaml(path))
