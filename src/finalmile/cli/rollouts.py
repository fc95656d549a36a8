"""`finalmile rollout` and `finalmile rollouts`: a candidate brought in step by step, judged against the champion."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console
from finalmile.errors import InvalidInputError

rollouts_app = typer.Typer(help="Rollouts: a candidate earning its traffic step by step.", no_args_is_help=True)


def rollout(
    pipeline: Annotated[
        str, typer.Argument(help="The pipeline whose serving champion the candidate is judged against.")
    ],
    candidate: Annotated[
        str, typer.Argument(help="A version of the pipeline (3), or a model version in place of its own (fraud:7).")
    ],
    steps: Annotated[
        str, typer.Option(help="The candidate's share of traffic at each step, in percent.")
    ] = "5,25,50,100",
    every: Annotated[str, typer.Option(help="How long each step lasts before it is judged: 10m, 1h.")] = "10m",
    gate: Annotated[
        list[str] | None,
        typer.Option(
            help='A gate: a name (error_rate, latency_p99, score_psi) or JSON (\'{"kind": "performance", '
            '"metric": "accuracy"}\'); repeat for several. Default: error_rate, latency_p99, score_psi.'
        ),
    ] = None,  # fmt: skip
    min_rows: Annotated[int, typer.Option(help="Fewer rows in either arm holds the step.", min=1)] = 500,
    key: Annotated[str | None, typer.Option(help="An input column that keeps one customer on one arm.")] = None,
    hold_alert_after: Annotated[int, typer.Option(help="Holds in a row before an alert and --on-hold.", min=1)] = 3,
    on_hold: Annotated[str, typer.Option(help="After that many holds: pause, abort or wait.")] = "pause",
    alias: Annotated[
        str, typer.Option(help="The alias moved to the candidate on promotion ('' for none).")
    ] = "champion",
) -> None:
    """Serve a candidate beside the champion and let it earn its traffic step by step."""
    try:
        shares = [float(s) for s in steps.split(",") if s.strip()]
    except ValueError:
        raise InvalidInputError(f"--steps {steps!r}: percentages separated by commas, like 5,25,50,100") from None
    gates = [_gate(g) for g in gate] if gate else None
    with client_from_env() as client:
        record = client.rollout(
            pipeline, candidate, shares, every, gates, min_rows, key, hold_alert_after, on_hold, alias or None
        )
    show_rollout(record)


def _gate(text: str) -> Any:
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInputError(f"--gate {text!r}: not JSON ({exc})") from None


@rollouts_app.command("list")
def list_rollouts(pipeline: Annotated[str | None, typer.Option(help="Only this pipeline's.")] = None) -> None:
    """Every rollout: candidate, state, step, the candidate's share of traffic."""
    with client_from_env() as client:
        records = client.rollouts(pipeline)
    table = Table("id", "pipeline", "candidate", "state", "step", "traffic", "last reason", "started (UTC)")
    for r in records:
        table.add_row(
            str(r.id), r.pipeline, r.candidate, r.state, f"{r.step + 1}/{len(r.plan['steps'])}", f"{r.weight:g}%",
            (r.reason or "")[:60], f"{r.created_at:%Y-%m-%d %H:%M}",
        )  # fmt: skip
    console.print(table)


@rollouts_app.command("show")
def show(rollout_id: Annotated[int, typer.Argument(help="The rollout's id (rollouts list).")]) -> None:
    """A rollout's timeline: every transition, each gate's figures for both arms."""
    with client_from_env() as client:
        show_rollout(client.rollout_run(rollout_id))


@rollouts_app.command("control")
def control(
    rollout_id: Annotated[int, typer.Argument(help="The rollout's id.")],
    action: Annotated[str, typer.Argument(help="pause, resume, abort, promote, or rollback (a promotion).")],
) -> None:
    """Pause, resume, abort (the champion serves alone again), promote now, or roll a promotion back."""
    with client_from_env() as client:
        show_rollout(client.control_rollout(rollout_id, action))


@rollouts_app.command("run")
def run() -> None:
    """Judge every rollout whose step is due now (`finalmile serve` does this every second)."""
    with client_from_env() as client:
        moved = client.run_rollouts()
    console.print(f"{len(moved)} rollout(s) moved")
    for record in moved:
        console.print(f"  rollout {record.id} of {record.pipeline}: {record.state}, {record.reason}")


def show_rollout(record: Any) -> None:
    steps = record.plan["steps"]
    console.print(
        f"rollout {record.id} of [bold]{record.pipeline}[/]: {record.candidate} is [bold]{record.state}[/] at "
        f"{record.weight:g}% (step {record.step + 1} of {len(steps)}: {', '.join(f'{s:g}%' for s in steps)})"
    )
    if record.reason:
        console.print(f"  {record.reason}")
    if not record.events:
        return
    table = Table("when (UTC)", "step", "decision", "traffic", "gate", "champion", "candidate", "threshold", "by")
    for e in record.events:
        gates = e.evidence.get("gates") or [{}]
        for i, g in enumerate(gates):
            first = i == 0
            table.add_row(
                f"{e.at:%H:%M:%S}" if first else "", str(e.step + 1) if first else "", e.decision if first else "",
                f"{e.weight:g}%" if first else "", g.get("gate", e.reason if first else ""), _num(g.get("champion")),
                _num(g.get("candidate")), g.get("threshold", ""), e.actor if first else "",
            )  # fmt: skip
    console.print(table)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"
