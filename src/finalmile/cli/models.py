"""`finalmile models …`: register models and manage their versions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console
from finalmile.errors import BadRequestError
from finalmile.runtimes.selection import fastest

models_app = typer.Typer(help="Register models and manage their versions.", no_args_is_help=True)
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
    from finalmile.arrow.files import read_table

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
    timings = c.get("timings_us") or {}
    if timings:
        sizes = list(next(iter(timings.values())))
        measured = Table("runtime", *(f"{s} rows (µs)" for s in sizes), title="measured", title_justify="left")
        for runtime, by_size in timings.items():
            cells = [f"{by_size[s]:,.0f}" + (" ★" if fastest(timings, int(s)) == runtime else "") for s in sizes]
            measured.add_row(runtime, *cells)
        console.print(measured)
        console.print("  ★ fastest: a deployment serves the runtime fastest at the size nearest its max_batch_size")


@models_app.command("alias")
def models_alias(name: str, version: int, alias: str) -> None:
    """Point ALIAS at VERSION of NAME (moving it if it pointed elsewhere)."""
    with _client() as client:
        mv = client.set_alias(name, version, alias)
    console.print(f"{name}@{alias} → version {mv.version}")


@models_app.command("unalias")
def models_unalias(name: str, alias: str) -> None:
    """Remove ALIAS from NAME."""
    with _client() as client:
        client.delete_alias(name, alias)
    console.print(f"{name}@{alias} removed")


@models_app.command("versions")
def models_versions(name: str) -> None:
    """Every version of NAME: framework, runtime, aliases, when and by whom."""
    table = Table("version", "framework", "runtime", "aliases", "created (UTC)", "by")
    with _client() as client:
        found = client.model_versions(name)
    for mv in found:
        r = mv.record
        table.add_row(
            str(r.version),
            r.framework,
            r.runtime,
            ", ".join(r.aliases) or "-",
            f"{r.created_at:%Y-%m-%d %H:%M}",
            r.created_by,
        )
    console.print(table)


@models_app.command("delete")
def models_delete(name: str, version: int) -> None:
    """Delete one version (refused while an alias or a pipeline pins it)."""
    with _client() as client:
        client.delete_model_version(name, version)
    console.print(f"deleted {name}:{version}")


def _parse_tags(items: list[str]) -> dict[str, str]:
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise BadRequestError(f"--tag {item!r}: expected KEY=VALUE")
        tags[key] = value
    return tags
