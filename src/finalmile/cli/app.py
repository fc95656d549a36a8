"""The `finalmile` command line (Typer + rich). User errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from finalmile.cli.access import admin_app, tokens_app, users_app, workspaces_app
from finalmile.cli.common import client_from_env, console, errors, print_table
from finalmile.cli.connections import connections_app
from finalmile.cli.jobs import jobs_app
from finalmile.cli.logs import ground_truth, logs, query
from finalmile.cli.logs import infer_file as infer_file_command
from finalmile.cli.models import models_app
from finalmile.cli.monitors import alerts, assays_app
from finalmile.cli.pipelines import deploy, infer, pipelines_app, serve, undeploy
from finalmile.cli.streams import streams_app
from finalmile.errors import FinalmileError

app = typer.Typer(
    help="finalmile: deploy any trained model, run it fast, watch it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(models_app, name="models")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(assays_app, name="assays")
app.add_typer(admin_app, name="admin")
app.add_typer(tokens_app, name="tokens")
app.add_typer(users_app, name="users")
app.add_typer(workspaces_app, name="workspaces")
app.add_typer(connections_app, name="connections")
app.add_typer(streams_app, name="streams")
app.add_typer(jobs_app, name="jobs")
for command in (deploy, undeploy, infer, serve, logs, query):
    app.command()(command)
app.command("ground-truth")(ground_truth)
app.command("alerts")(alerts)
app.command("infer-file")(infer_file_command)
_client = client_from_env


@app.command("predict")
def predict(
    ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Rows to score: CSV, Parquet or JSON lines.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write predictions here (same formats).")
    ] = None,
    native: Annotated[bool, typer.Option("--native", help="Run the original framework, not ONNX.")] = False,
) -> None:
    """Predict with a model version in-process."""
    from finalmile.arrow.files import file_format, read_table, write_table

    if output is not None:
        file_format(output)  # refuse an unknown output type before doing the work
    rows = read_table(input)
    with _client() as client:
        result = client.model(ref).predict(rows, runtime="native" if native else "auto")
    if output is not None:
        write_table(result, output)
        console.print(f"wrote {result.num_rows} predictions to {output}")
        return
    print_table(result)


@app.command("demo")
def demo() -> None:
    """Train a fraud model, register it, show the ONNX speed-up, and predict."""
    from finalmile.cli.demo.run import run_demo

    with _client() as client:
        run_demo(client, console)


@app.command("audit")
def audit(
    target: Annotated[str | None, typer.Option(help="Only targets starting with this, e.g. 'pipeline fraud'.")] = None,
    limit: Annotated[int, typer.Option(help="The most recent this many.", min=1)] = 50,
) -> None:
    """Every state change: who, when, what, before -> after."""
    from rich.table import Table

    with _client() as client:
        entries = client.services.audit.entries(target, limit)
    table = Table("at (UTC)", "actor", "action", "target", "before", "after")
    for e in entries:
        table.add_row(f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor, e.action, e.target, e.before or "-", e.after or "-")
    console.print(table)


@app.command("version")
def version() -> None:
    """Print the finalmile version."""
    from finalmile._version import __version__

    console.print(__version__)


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="finalmile")
    except FinalmileError as exc:
        errors.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
