"""CLI commands for monitors: `finalmile assays apply|list|preview|run|results|chart` and `finalmile alerts`."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
import typer

from finalmile.cli.common import client_from_env, console, print_table, serving
from finalmile.cli.logs import ago
from finalmile.config import read_yaml
from finalmile.errors import InvalidInputError

assays_app = typer.Typer(help="Drift assays and other monitors: define, preview, run, chart.", no_args_is_help=True)


@assays_app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="YAML: name, pipeline, kind, column, metric, baseline, window, …")],
    start: Annotated[
        str | None, typer.Option(help="First window ends one interval after this long ago (30m, 1d).")
    ] = None,
) -> None:
    """Create a monitor from YAML and save it; the server computes it every interval."""
    fields: dict[str, Any] = read_yaml(path)
    if not isinstance(fields, dict) or "name" not in fields or "pipeline" not in fields:
        raise InvalidInputError(f"{path}: expected a mapping with at least 'name' and 'pipeline'")
    baseline = fields.get("baseline")
    if isinstance(baseline, dict) and "file" in baseline:  # training data on disk, read here
        from finalmile.arrow.files import read_table

        fields["baseline"] = read_table(baseline["file"])
    with client_from_env() as client:
        config = client.save_monitor(fields, ago(start, "--start")).config
    console.print(f"saved monitor [bold]{config.name}[/] ({config.kind}, {config.metric})")


@assays_app.command("list")
def list_monitors() -> None:
    """Saved monitors with their latest status."""
    with client_from_env() as client:
        rows = []
        for monitor in client.monitors():
            results = client.monitor_results(monitor.name)
            last = results.iloc[-1] if len(results) else None
            c = monitor.config
            watched = c.column or (c.label if c.kind == "performance" else c.kind)
            rows.append(
                {
                    "name": c.name,
                    "pipeline": c.pipeline,
                    "watches": f"{c.metric} of {watched}",
                    "last window end": last.window_end.strftime("%m-%d %H:%M:%S") if last is not None else "",
                    "score": float(last.score) if last is not None and last.score == last.score else None,
                    "status": last.status if last is not None else "",
                }
            )
    if not rows:
        console.print("no monitors yet: client.build_assay(...).save() or finalmile assays apply FILE")
        return
    print_table(pa.Table.from_pylist(rows), limit=1000)


@assays_app.command("show")
def show(name: str) -> None:
    """A saved monitor's definition."""
    with client_from_env() as client:
        config = client.monitor(name).config
    console.print_json(config.model_dump_json())


@assays_app.command("delete")
def delete(name: str) -> None:
    """Delete a monitor and its results."""
    with client_from_env() as client:
        client.delete_monitor(name)
    console.print(f"deleted monitor {name}")


@assays_app.command("preview")
def preview(
    name: str,
    since: Annotated[str, typer.Option(help="How far back the first window starts: 7d, 12h.")] = "7d",
) -> None:
    """Compute a saved monitor over history at once, storing nothing (to tune thresholds)."""
    with client_from_env() as client:
        start = ago(since, "--since")
        assert start is not None
        _print_results(client.preview_monitor(name, start, datetime.now(UTC)))


@assays_app.command("run")
def run() -> None:
    """Compute every window that has ended for every saved monitor (the server does this by itself)."""
    with client_from_env() as client:
        stored = serving(client).run_monitors()
    console.print(f"stored {stored} results")


@assays_app.command("results")
def results(name: str) -> None:
    """A saved monitor's stored results, oldest first."""
    with client_from_env() as client:
        _print_results(client.monitor_results(name))


@assays_app.command("chart")
def chart(
    name: str,
    output: Annotated[Path, typer.Option("--output", "-o", help="PNG file to write.")] = Path("assay.png"),
    window: Annotated[int, typer.Option(help="Which result's histograms to draw: 0 the first, -1 the last.")] = -1,
) -> None:
    """Write a PNG: the score over time with thresholds, and one window's histograms against the baseline."""
    with client_from_env() as client:
        path = client.monitor(name).chart(output, window=window)
    console.print(f"wrote {path}")


def alerts(
    monitor: Annotated[str | None, typer.Option(help="Only this monitor's alerts.")] = None,
) -> None:
    """Alerts raised by monitors, and what their actions did."""
    with client_from_env() as client:
        raised = client.alerts(monitor)
    if raised.empty:
        console.print("no alerts")
        return
    print_table(
        pa.Table.from_pylist(
            [
                {
                    "id": a["alert_id"],
                    "monitor": a["monitor"],
                    "level": a["level"],
                    "value": a["value"],
                    "group": a["group"],
                    "window end": a["window_end"],
                    "acknowledged by": a.get("acknowledged_by") or "",
                    "actions": ", ".join(f"{t['action']}: {t['outcome']}" for t in a["actions"]),
                }
                for a in raised.to_dict("records")
            ]
        ),
        limit=1000,
    )


def _print_results(frame: Any) -> None:
    if frame.empty:
        console.print("no results")
        return
    shown = frame.drop(columns=["evidence"]).assign(
        window_start=frame.window_start.astype(str), window_end=frame.window_end.astype(str)
    )
    print_table(pa.Table.from_pandas(shown, preserve_index=False), limit=1000)
