"""`finalmile replay` and `finalmile replays`: logged traffic through a candidate, before it serves anyone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console, print_table
from finalmile.cli.logs import ago

replays_app = typer.Typer(help="Replays: what a candidate would have answered on logged traffic.", no_args_is_help=True)


def replay(
    pipeline: Annotated[str, typer.Argument(help="The pipeline whose logged traffic is replayed.")],
    candidate: Annotated[
        str, typer.Argument(help="A version of the pipeline (3), or a model version in place of its own (fraud:7).")
    ],
    since: Annotated[str, typer.Option(help="How far back the range starts: 7d, 12h.")] = "7d",
    until: Annotated[str | None, typer.Option(help="Up to how long ago (default: now).")] = None,
    sample: Annotated[float | None, typer.Option(help="A fraction of the rows, drawn by --seed.")] = None,
    seed: Annotated[int, typer.Option(help="Which sample: the same seed, the same rows.", min=0)] = 0,
    segment_by: Annotated[str | None, typer.Option(help="Figures per value of this logged column too.")] = None,
    label: Annotated[str | None, typer.Option(help="The ground-truth column to score both arms against.")] = None,
) -> None:
    """Run a pipeline's logged inputs through a candidate and compare with what was served."""
    with client_from_env() as client:
        record = client.replay(
            pipeline, candidate, ago(since, "--since"), ago(until, "--until"), sample, seed, segment_by, label
        )
    show_summary(record)


@replays_app.command("list")
def list_replays(pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's.")] = None) -> None:
    """Every replay: candidate, rows, agreement, mean score difference, PSI."""
    with client_from_env() as client:
        records = client.replays(pipeline)
    table = Table("id", "pipeline", "candidate", "status", "rows", "agreement", "mean Δ score", "PSI", "when (UTC)")
    for r in records:
        s = r.summary or {}
        table.add_row(
            str(r.id),
            r.pipeline,
            r.candidate,
            r.status,
            f"{r.rows:,}",
            _pct(s.get("agreement")),
            _num((s.get("difference") or {}).get("mean")),
            _num(s.get("psi")),
            f"{r.created_at:%Y-%m-%d %H:%M}",
        )
    console.print(table)


@replays_app.command("show")
def show(replay_id: Annotated[int, typer.Argument(help="The replay's id (replays list).")]) -> None:
    """A replay's figures, overall and per segment."""
    with client_from_env() as client:
        show_summary(client.replay_run(replay_id))


@replays_app.command("rows")
def rows(
    replay_id: Annotated[int, typer.Argument(help="The replay's id.")],
    limit: Annotated[int, typer.Option(help="The rows where the arms differ most, this many.", min=1)] = 20,
    output: Annotated[Path | None, typer.Option(help="Write them to .parquet, .csv or .jsonl instead.")] = None,
) -> None:
    """A replay's rows, where the candidate and what was served differ most first."""
    from finalmile.arrow.files import write_table

    with client_from_env() as client:
        table = client.replay_rows(replay_id, None if output else limit)
    if output is not None:
        write_table(table, output)
        console.print(f"wrote {table.num_rows:,} rows to {output}")
        return
    print_table(table, limit)


def show_summary(record: Any) -> None:
    s = record.summary or {}
    console.print(f"replay {record.id} of [bold]{record.pipeline}[/] through {record.candidate}: {record.status}")
    if record.error:
        console.print(f"[red]{record.error}[/]")
    if not s:
        return
    figures = Table.grid(padding=(0, 2))
    figures.add_column(style="bold")
    figures.add_column()
    diff = s.get("difference") or {}
    for name, value in [
        ("rows", f"{s['rows']:,}"),
        ("label agreement", _pct(s.get("agreement"))),
        (
            f"{s.get('score')} difference",
            f"mean {_num(diff.get('mean'))}, |mean| {_num(diff.get('mean_abs'))}, "
            f"p05 {_num(diff.get('p05'))}, median {_num(diff.get('p50'))}, p95 {_num(diff.get('p95'))}",
        ),
        ("PSI (candidate vs served)", _num(s.get("psi"))),
        (
            "latency",
            f"served {_num((s.get('latency_ms') or {}).get('served_request_mean'))} ms a request, "
            f"candidate {_num((s.get('latency_ms') or {}).get('candidate_per_row'), 4)} ms a row",
        ),
    ]:
        figures.add_row(name, value)
    for check, rates in (s.get("checks") or {}).items():
        figures.add_row(f"check {check}", f"served {_pct(rates['served'])}, candidate {_pct(rates['candidate'])}")
    quality = s.get("quality")
    if quality:
        figures.add_row(
            f"{quality['metric']} ({quality['rows']:,} labelled)",
            f"served {_num(quality['served'])}, candidate {_num(quality['candidate'])}",
        )
    console.print(figures)
    segments = s.get("segments") or {}
    if segments:
        table = Table("segment", "rows", "agreement", "mean Δ score", "PSI", title="per segment", title_justify="left")
        for value, f in segments.items():
            d = f.get("difference") or {}
            table.add_row(value, f"{f['rows']:,}", _pct(f.get("agreement")), _num(d.get("mean")), _num(f.get("psi")))
        console.print(table)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}g}"
