"""The `finalmile` command line (Typer + rich). User errors print one line and exit non-zero, without a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli_common import client_from_env, console, errors, print_table
from finalmile.cli_logs import ground_truth, logs, query
from finalmile.cli_logs import infer_file as infer_file_command
from finalmile.cli_monitors import alerts, assays_app
from finalmile.cli_pipelines import deploy, infer, pipelines_app, serve, undeploy
from finalmile.errors import FinalmileError

app = typer.Typer(
    help="finalmile: deploy any trained model, run it fast, watch it.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
models_app = typer.Typer(help="Register models and manage their versions.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(assays_app, name="assays")
for command in (deploy, undeploy, infer, serve, logs, query):
    app.command()(command)
app.command("ground-truth")(ground_truth)
app.command("alerts")(alerts)
app.command("infer-file")(infer_file_command)
_client = client_from_env


@models_app.command("upload")
def models_upload(
    name: Annotated[str, typer.Argument(help="Model name; each upload makes a new version.")],
    path: Annotated[
        str, typer.Argument(help="Model file or directory (.onnx, .joblib, .json, .txt, .pt, .py, MLflow).")
    ],
    framework: Annotated[str | None, typer.Option(help="Override framework detection.")] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the new version.")] = None,
    sample: Annotated[
        Path | None, typer.Option(help="Sample rows (CSV, Parquet, JSON lines) for schema and parity.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE, repeatable.")] = None,
    native: Annotated[bool, typer.Option("--native", help="Serve with the original framework; skip ONNX.")] = False,
) -> None:
    """Upload a model as a new version."""
    from finalmile.files import read_table

    tags = _parse_tags(tag or [])
    sample_table = read_table(sample) if sample is not None else None
    with _client() as client, console.status(f"Uploading {name} (checking the model, converting to ONNX)…"):
        mv = client.upload_model(
            name,
            path,
            framework=framework,
            sample=sample_table,
            alias=alias,
            tags=tags,
            runtime="native" if native else "auto",
        )
    console.print(f"[green]Registered[/] {mv.ref} ({mv.framework}, serving with [bold]{mv.runtime}[/])")
    console.print(f"  ONNX: {mv.conversion['reason']}")


@models_app.command("list")
def models_list() -> None:
    """List registered models."""
    table = Table("model", "versions", "latest", "aliases", "created")
    with _client() as client:
        summaries = client.models()
    for m in summaries:
        aliases = ", ".join(f"{a}→{v}" for a, v in sorted(m.aliases.items()))
        table.add_row(m.name, str(m.versions), str(m.latest), aliases, f"{m.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@models_app.command("show")
def models_show(ref: Annotated[str, typer.Argument(help="NAME, NAME:VERSION or NAME@ALIAS")]) -> None:
    """Show one version: framework, runtime, schema, ONNX conversion evidence, libraries."""
    with _client() as client:
        mv = client.model(ref)
    r = mv.record
    info = Table.grid(padding=(0, 2))
    info.add_column(style="bold")
    info.add_column()
    for key, value in [
        ("model", mv.ref),
        ("aliases", ", ".join(r.aliases) or "-"),
        ("framework", r.framework),
        ("runtime", r.runtime),
        ("task", r.task or "-"),
        ("classes", json.dumps(r.classes) if r.classes else "-"),
        ("artifact", f"sha256:{r.artifact_sha256}"),
        ("onnx", f"sha256:{r.onnx_sha256}" if r.onnx_sha256 else "-"),
        ("created", f"{r.created_at:%Y-%m-%d %H:%M:%S %Z} by {r.created_by}"),
        ("tags", ", ".join(f"{k}={v}" for k, v in r.tags.items()) or "-"),
        ("libraries", ", ".join(f"{k} {v}" for k, v in r.libraries.items())),
    ]:
        info.add_row(key, value)
    console.print(info)
    schema = Table("", "column", "type", title="schema", title_justify="left")
    for column in mv.schema.inputs or []:
        schema.add_row("in", column.name, column.describe())
    if mv.schema.inputs is None:
        schema.add_row("in", "(not declared)", "any")
    for column in mv.schema.outputs:
        schema.add_row("out", column.name, column.describe())
    console.print(schema)
    c = r.conversion or {}
    console.print(f"[bold]ONNX conversion[/]: {c.get('status', '-')} — {c.get('reason', '')}")
    if c.get("rows_checked"):
        console.print(
            f"  parity on {c['rows_checked']} rows ({c['sample']}): {c['label_mismatches']} label mismatches, "
            f"max |Δ| {c['max_abs_diff']:.3g}, tolerance atol {c['atol']:g} + rtol {c['rtol']:g}; {c['converter']}"
        )


@models_app.command("alias")
def models_alias(name: str, version: int, alias: str) -> None:
    """Point ALIAS at VERSION of NAME (moving it if it pointed elsewhere)."""
    with _client() as client:
        mv = client.set_alias(name, version, alias)
    console.print(f"{name}@{alias} → version {mv.version}")


@models_app.command("delete")
def models_delete(name: str, version: int) -> None:
    """Delete one version (refused while an alias or a pipeline pins it)."""
    with _client() as client:
        client.delete_model_version(name, version)
    console.print(f"deleted {name}:{version}")


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
    from finalmile.files import file_format, read_table, write_table

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
    from finalmile.demo import run_demo

    with _client() as client:
        run_demo(client, console)


@app.command("version")
def version() -> None:
    """Print the finalmile version."""
    from finalmile import __version__

    console.print(__version__)


def _parse_tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise FinalmileError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="finalmile")
    except FinalmileError as exc:
        errors.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(1)
