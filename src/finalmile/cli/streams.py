"""`finalmile streams apply|list|status|pause|resume|delete`: pipelines fed from brokers, run by `finalmile serve`."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console

streams_app = typer.Typer(
    help="Streams: a deployed pipeline fed from NATS JetStream, Redis Streams or RabbitMQ.", no_args_is_help=True
)


@streams_app.command("apply")
def apply(
    file: Annotated[str, typer.Argument(help="A stream definition (YAML): name, pipeline, source, sink, …")],
) -> None:
    """Create or replace a stream; running servers start it within seconds."""
    from finalmile.streaming.config import StreamConfig, load_stream_file

    definition = load_stream_file(file)
    with client_from_env() as client:
        record = client.build_stream(**definition.model_dump(mode="json", exclude_unset=True))
    c = StreamConfig.model_validate(record["config"])
    console.print(
        f"stream {c.name}: {c.source.broker}:{c.source.subject} -> pipeline {c.pipeline} -> "
        f"{c.sink.broker}:{c.sink.subject} (dead letters: {c.dead_letter_subject})"
    )


@streams_app.command("list")
def list_streams() -> None:
    """Every stream, paused or not, with its last reported rate and lag."""
    with client_from_env() as client:
        records = client.streams()
    table = Table(
        "name", "pipeline", "source", "sink", "state", "consumers", "msgs/s", "lag", "processed", "dead letters"
    )
    for column in table.columns:  # a narrow terminal wraps the other columns, never these
        column.no_wrap = column.header in ("name", "state")
    for r in records:
        s = r["status"] or {}
        state = "paused" if r["paused"] else s.get("state", "not started")
        source, sink = r["config"]["source"], r["config"]["sink"]
        table.add_row(
            r["name"],
            r["config"]["pipeline"],
            f"{source['broker']}:{source['subject']}",
            f"{sink['broker']}:{sink['subject']}",
            state,
            str(s.get("live_consumers", "-")),
            str(s.get("messages_per_s", "-")),
            str(s.get("lag", "-")),
            str(s.get("processed", "-")),
            str(s.get("dead_lettered", "-")),
        )
    console.print(table)


@streams_app.command("status")
def status(name: Annotated[str, typer.Argument(help="Stream name.")]) -> None:
    """A stream's definition and its counters (lag, rate, failures, last error), in all and per consumer."""
    with client_from_env() as client:
        record = client.stream(name)
    console.print_json(json.dumps(record))


@streams_app.command("pause")
def pause(name: Annotated[str, typer.Argument(help="Stream name.")]) -> None:
    """Stop consuming (messages wait in the broker)."""
    with client_from_env() as client:
        client.pause_stream(name)
    console.print(f"stream {name} paused")


@streams_app.command("resume")
def resume(name: Annotated[str, typer.Argument(help="Stream name.")]) -> None:
    with client_from_env() as client:
        client.resume_stream(name)
    console.print(f"stream {name} resumed")


@streams_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Stream name.")]) -> None:
    """Remove the stream (the broker keeps its messages and consumer group)."""
    with client_from_env() as client:
        client.delete_stream(name)
    console.print(f"stream {name} deleted")
