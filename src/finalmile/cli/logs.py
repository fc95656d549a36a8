"""CLI commands over the inference log: `finalmile logs`, `finalmile query` and `finalmile queries`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from finalmile.cli.common import client_from_env, console, print_table, serving
from finalmile.errors import BadRequestError


def logs(
    pipeline: str,
    since: Annotated[str | None, typer.Option(help="How far back: 30m, 1h, 7d.")] = None,
    until: Annotated[str | None, typer.Option(help="Up to how long ago: 30m, 1h, 7d (default: now).")] = None,
    limit: Annotated[int, typer.Option(help="Most rows to show.", min=1)] = 20,
    columns: Annotated[str | None, typer.Option(help="Comma-separated columns, e.g. time,out_score.")] = None,
    output: Annotated[
        Path | None, typer.Option(help="Export every row in the range to this .parquet, .csv or .jsonl file.")
    ] = None,
) -> None:
    """Show a pipeline's most recent inference log rows, or export a time range of them."""
    start, end = ago(since, "--since"), ago(until, "--until")
    with client_from_env() as client:
        if output is not None:
            rows = client.export_logs(pipeline, output, start, end)
            console.print(f"wrote {rows:,} rows to {output}")
            return
        chosen = [c.strip() for c in columns.split(",")] if columns else None
        print_table(client.pipeline_logs(pipeline, start=start, end=end, limit=limit, columns=chosen), limit=limit)


def ago(text: str | None, option: str) -> datetime | None:
    """The moment `text` (30m, 1h, 7d) before now; None stays None."""
    from finalmile.config import parse_duration

    return None if text is None else datetime.now(UTC) - timedelta(seconds=parse_duration(text, option))


def query(
    sql: Annotated[str, typer.Argument(help="One read-only SQL statement over logs, models, pipelines.")],
    format: Annotated[str, typer.Option(help="table, csv, json or parquet.")] = "table",
    output: Annotated[Path | None, typer.Option(help="Write the result here.")] = None,
) -> None:
    """Run read-only DuckDB SQL over the inference log."""
    from finalmile.arrow.files import write_table
    from finalmile.arrow.text import csv_bytes

    if format not in ("table", "csv", "json", "parquet"):
        raise BadRequestError(f"--format {format!r}: expected table, csv, json or parquet")
    import pyarrow as pa

    with client_from_env() as client:
        result = pa.Table.from_pandas(client.query(sql), preserve_index=False)
    if output is not None:
        write_table(result, output)  # the format follows the file's extension
        console.print(f"wrote {result.num_rows} rows to {output}")
    elif format == "table":
        print_table(result, limit=100)
    elif format == "csv":
        typer.echo(csv_bytes(result).decode(), nl=False)
    elif format == "json":
        for row in result.to_pylist():
            typer.echo(json.dumps(row, default=str))
    else:
        raise BadRequestError("--format parquet needs --output FILE.parquet")


def ground_truth(
    pipeline: str,
    path: Annotated[Path, typer.Argument(help="Labels: CSV, Parquet or JSON lines with the key and label columns.")],
    key: Annotated[str, typer.Option(help="request_id, or a logged input column.")] = "request_id",
) -> None:
    """Add labels that arrived later; they join the log in SQL (`ground_truth` view, newest label wins)."""
    from finalmile.arrow.files import read_table

    labels = read_table(path)
    with client_from_env() as client:
        receipt = client.pipeline(pipeline).add_ground_truth(labels, key=key)
    console.print(f"{receipt.received} labels: {receipt.matched} keys matched the log, {receipt.unknown} unknown")


def infer_file(
    pipeline: str,
    source: Annotated[Path, typer.Argument(help="Input: CSV, Parquet or JSON lines, any size.")],
    output: Annotated[Path, typer.Argument(help="Output file (same formats): inputs with the outputs beside them.")],
    batch_size: Annotated[int, typer.Option(help="Rows per batch.")] = 10_000,
    log: Annotated[bool, typer.Option("--log", help="Also record the rows in the inference log.")] = False,
    backend: Annotated[
        str, typer.Option(help="local (resumable), or ray: Ray actors on the cluster (RAY_ADDRESS) or a local one")
    ] = "local",
) -> None:
    """Score a file through a deployed pipeline, batch by batch (on the server with --url: the file is read and
    written here); rerun after an interruption to resume (local backend)."""
    with client_from_env() as client:
        result = (
            serving(client)
            .pipeline(pipeline)
            .infer_file(source, output, batch_size=batch_size, log=log, backend=backend)
        )
    resumed = f" ({result.resumed_batches} batches already done)" if result.resumed_batches else ""
    console.print(f"wrote {result.rows:,} rows to {result.output}{resumed}")


queries_app = typer.Typer(help="Saved queries: the dashboard's SQL page lists them.", no_args_is_help=True)


@queries_app.command("list")
def list_queries() -> None:
    """Saved queries: name, SQL, who saved it."""
    with client_from_env() as client:
        saved = client.saved_queries()
    for q in saved:
        console.print(f"[bold]{q.name}[/] ({q.created_by}, {q.created_at:%Y-%m-%d %H:%M}): {q.sql}", highlight=False)
    if not saved:
        console.print("no saved queries")


@queries_app.command("save")
def save_query(name: str, sql: Annotated[str, typer.Argument(help="One SELECT over the views.")]) -> None:
    """Save (or replace) a query; checked now."""
    with client_from_env() as client:
        client.save_query(name, sql)
    console.print(f"saved query {name}")


@queries_app.command("delete")
def delete_query(name: str) -> None:
    with client_from_env() as client:
        client.delete_query(name)
    console.print(f"deleted query {name}")
