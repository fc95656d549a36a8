"""The `finalmile` command line (Typer + rich). User errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from finalmile.cli.access import admin_app, tokens_app, users_app, workspaces_app
from finalmile.cli.common import client_from_env, console, errors, print_frame, print_table, with_server_options
from finalmile.cli.connections import connections_app
from finalmile.cli.edge import bundle
from finalmile.cli.explanations import explain, importance, models_explain
from finalmile.cli.jobs import jobs_app
from finalmile.cli.logs import ground_truth, logs, queries_app, query
from finalmile.cli.logs import infer_file as infer_file_command
from finalmile.cli.models import models_app
from finalmile.cli.monitors import alerts, assays_app
from finalmile.cli.pipelines import deploy, deployments, infer, pipelines_app, rollback, route, serve, undeploy
from finalmile.cli.replays import replay, replays_app
from finalmile.cli.rollouts import rollout, rollouts_app
from finalmile.cli.streams import streams_app
from finalmile.errors import FinalmileError

app = typer.Typer(
    help="finalmile: deploy any trained model, run it fast, watch it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
models_app.command("explain")(models_explain)
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
app.add_typer(queries_app, name="queries")
app.add_typer(replays_app, name="replays")
app.add_typer(rollouts_app, name="rollouts")
for command in (
    deploy,
    undeploy,
    rollback,
    route,
    deployments,
    infer,
    replay,
    rollout,
    explain,
    importance,
    serve,
    logs,
    query,
    bundle,
):
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
def demo(
    which: Annotated[
        str, typer.Argument(help="'fraud' (default): the whole product on a fraud model; 'llm': a generative model.")
    ] = "fraud",
) -> None:
    """Train a fraud model, register it, show the ONNX speed-up, predict, watch and roll out; `demo llm` serves a
    tiny generative model instead."""
    if which not in ("fraud", "llm"):
        raise typer.BadParameter(f"expected 'fraud' or 'llm', got {which!r}", param_hint="WHICH")
    with _client() as client:
        if which == "llm":
            from finalmile.cli.demo.llm import run_llm_demo

            run_llm_demo(client, console)
            return
        from finalmile.cli.demo.run import run_demo

        run_demo(client, console)


@app.command("audit")
def audit(
    target: Annotated[str | None, typer.Option(help="Only targets starting with this, e.g. 'pipeline fraud'.")] = None,
    limit: Annotated[int, typer.Option(help="The most recent this many.", min=1)] = 50,
) -> None:
    """Every state change: who, when, what, before -> after."""
    with _client() as client:
        entries = client.audit(target, limit)
    if entries.empty:
        console.print("no changes recorded")
        return
    entries = entries.assign(at=entries["at"].dt.strftime("%Y-%m-%d %H:%M:%S"))
    print_frame(entries[["at", "actor", "action", "target", "before", "after"]].fillna("-"), limit)


@app.command("whoami")
def whoami() -> None:
    """The user, workspace and role this command acts as (a server's token, or the local store's user)."""
    with _client() as client:
        me = client.whoami()
    console.print(f"{me['user']} — {me['role']} in workspace {me['workspace']}")


@app.command("acknowledge")
def acknowledge(alert_id: Annotated[int, typer.Argument(help="The alert's id (finalmile alerts).")]) -> None:
    """Say a person has seen an alert; it no longer counts as open."""
    with _client() as client:
        alert = client.acknowledge_alert(alert_id)
    console.print(f"alert {alert.id} acknowledged by {alert.acknowledged_by}")


@app.command("logs-health")
def logs_health() -> None:
    """Inference-log files that failed their check and were set aside (none: healthy)."""
    with _client() as client:
        health = client.log_health()
    if health["healthy"]:
        console.print("healthy: no log file set aside")
        return
    for kept in health["set_aside"]:
        console.print(f"set aside: logs/_corrupt/{kept}")
    raise typer.Exit(1)


@app.command("version")
def version() -> None:
    """Print the finalmile version."""
    from finalmile._version import __version__

    console.print(__version__)


with_server_options(app)  # every command but the local ones takes `--url` and `--token`


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="finalmile")
    except FinalmileError as exc:
        errors.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
