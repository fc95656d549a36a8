"""`finalmile explain`, `finalmile importance` and `finalmile models explain`: why rows were scored as they were."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console
from finalmile.cli.logs import ago

BARS = 30
"""Characters of the longest contribution's bar."""


def explain(
    pipeline: Annotated[str, typer.Argument(help="The pipeline that answered the request.")],
    request_id: Annotated[str, typer.Argument(help="The request's id (the finalmile-request-id header, the log).")],
) -> None:
    """Why a logged request was scored as it was: each feature's contribution, largest first."""
    with client_from_env() as client:
        show_contributions(client.explain(pipeline, request_id))


def importance(
    pipeline: Annotated[str, typer.Argument(help="The pipeline whose logged rows are explained.")],
    since: Annotated[str, typer.Option(help="How far back: 1d, 12h.")] = "1d",
    window: Annotated[str, typer.Option(help="One figure per feature per window of this length.")] = "1h",
    rows: Annotated[int, typer.Option(help="Rows explained per window.", min=1)] = 200,
) -> None:
    """Which features drive the decisions, window by window (mean absolute contribution)."""
    with client_from_env() as client:
        frame = client.importance(pipeline, ago(since, "--since"), None, window, rows)
    if frame.empty:
        console.print("no logged rows in that range")
        return
    features = list(frame.feature.unique())
    table = Table("window end (UTC)", "model", "rows", *features)
    for end, group in frame.groupby("window_end", sort=True):
        by = dict(zip(group.feature, group.mean_abs_contribution, strict=True))
        first = group.iloc[0]
        table.add_row(f"{end:%Y-%m-%d %H:%M}", first.model, str(first.rows), *(f"{by.get(f, 0):.4g}" for f in features))
    console.print(table)


def models_explain(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION or NAME@ALIAS")],
    input: Annotated[Path, typer.Option("--input", "-i", help="Rows to explain: CSV, Parquet or JSON lines.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the contributions here.")] = None,
) -> None:
    """Each feature's contribution to each row's output, by a model version."""
    from finalmile.arrow.files import read_table, write_table

    rows = read_table(input)
    with client_from_env() as client:
        frame = client.explain_model(ref, rows.to_pandas())
    if output is not None:
        import pyarrow as pa

        write_table(pa.Table.from_pandas(frame, preserve_index=False), output)
        console.print(f"wrote {len(frame):,} explained rows to {output}")
        return
    show_contributions(frame)


def show_contributions(frame: Any) -> None:
    """Each row's contributions as bars, largest first, with the base value and the output they add up to."""
    fixed = {"request_id", "row", "model", "base_value", "value"}
    features = [c for c in frame.columns if c not in fixed]
    for i, row in frame.iterrows():
        title = f"row {row.get('row', i)}" + (f" of {row['request_id']} ({row['model']})" if "model" in frame else "")
        console.print(f"[bold]{title}[/]: {row['value']:.4g} = base {row['base_value']:.4g} + contributions")
        biggest = max((abs(row[f]) for f in features), default=0) or 1.0
        for feature in sorted(features, key=lambda f: -abs(row[f])):
            bar = "█" * max(1, round(BARS * abs(row[feature]) / biggest))
            colour = "red" if row[feature] > 0 else "green"
            console.print(f"  {feature:>20} {row[feature]:+.4f} [{colour}]{bar}[/]")
