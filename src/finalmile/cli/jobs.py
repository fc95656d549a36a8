"""`finalmile jobs upload|schedule|run|runs|list`: Python jobs with `main(ctx)`, run now or on a cron schedule."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console

jobs_app = typer.Typer(help="Scheduled jobs: a Python file or zip with main(ctx), run by finalmile serve.")


@jobs_app.command("upload")
def upload(
    name: Annotated[str, typer.Argument(help="Job name.")],
    file: Annotated[str, typer.Argument(help="A .py file, or a .zip with main.py, defining main(ctx).")],
    requirements: Annotated[
        str | None, typer.Option(help="A pip requirements file, installed for this job (once per distinct file).")
    ] = None,
) -> None:
    """Store (or replace) a job's code; its schedule stays as it was."""
    with client_from_env() as client:
        record = client.upload_job(name, file, requirements)
    extra = f", with requirements from {requirements}" if requirements else ""
    console.print(f"job {record.name} ({record.kind}) uploaded{extra}")


@jobs_app.command("schedule")
def schedule(
    name: Annotated[str, typer.Argument(help="Job name.")],
    cron: Annotated[str | None, typer.Option(help="Cron expression, e.g. '0 2 * * *'; omit to run by hand only.")],
    tz: Annotated[str, typer.Option(help="Time zone the cron expression is read in.")] = "UTC",
    timeout: Annotated[float, typer.Option(help="Seconds before a run is killed.")] = 3600.0,
    retries: Annotated[int, typer.Option(help="Further attempts after a failure (back-off 1 s, 2 s, 4 s…).")] = 0,
    deadline: Annotated[float, typer.Option(help="A slot missed by more than this many seconds is skipped.")] = 300.0,
) -> None:
    """Run a job on a schedule; every `finalmile serve` shares the schedule and each slot runs once."""
    with client_from_env() as client:
        record = client.schedule_job(name, cron, tz, timeout, retries, deadline)
    console.print(f"job {record.name}: {record.cron or 'by hand only'} ({record.tz}), timeout {record.timeout_s:g} s")


@jobs_app.command("run")
def run(name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """Run a job now, here, and wait for it; exits with the run's status."""
    with client_from_env() as client:
        record = client.run_job(name)
    console.print(record.log, markup=False, highlight=False, end="")
    console.print(f"job {name}: {record.status} (exit code {record.exit_code}) in {record.duration_s:.1f} s")
    if record.status != "succeeded":
        raise typer.Exit(1)


@jobs_app.command("runs")
def runs(
    name: Annotated[str, typer.Argument(help="Job name.")],
    limit: Annotated[int, typer.Option(help="The most recent this many.", min=1, max=1000)] = 20,
    log: Annotated[bool, typer.Option("--log", help="Print the newest run's captured log too.")] = False,
) -> None:
    """A job's runs, newest first: slot, status, start, duration, exit code."""
    with client_from_env() as client:
        records = client.job_runs(name, limit)
    table = Table("id", "slot (UTC)", "status", "started (UTC)", "duration s", "exit code", "attempts", "runner")
    for column in table.columns:  # a narrow terminal wraps the other columns, never these
        column.no_wrap = column.header in ("slot (UTC)", "status")
    for r in records:
        table.add_row(
            str(r.id),
            f"{r.slot:%Y-%m-%d %H:%M}" if r.slot else "by hand",
            r.status,
            f"{r.started_at:%Y-%m-%d %H:%M:%S}",
            f"{r.duration_s:.1f}" if r.duration_s is not None else "-",
            str(r.exit_code) if r.exit_code is not None else "-",
            str(r.attempts),
            r.runner,
        )
    console.print(table)
    if log and records:
        console.print(records[0].log, markup=False, highlight=False)


@jobs_app.command("list")
def list_jobs() -> None:
    """Every job and its schedule."""
    with client_from_env() as client:
        records = client.jobs()
    table = Table("name", "kind", "cron", "tz", "timeout s", "retries", "uploaded by")
    for j in records:
        table.add_row(j.name, j.kind, j.cron or "-", j.tz, f"{j.timeout_s:g}", str(j.retries), j.created_by)
    console.print(table)


@jobs_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """Forget a job and its schedule (its past runs stay, as history)."""
    with client_from_env() as client:
        client.delete_job(name)
    console.print(f"job {name} deleted")


@jobs_app.command("show")
def show(name: Annotated[str, typer.Argument(help="Job name.")]) -> None:
    """A job's kind, schedule and limits."""
    with client_from_env() as client:
        j = client.job(name)
    console.print(
        f"job {j.name} ({j.kind}): {j.cron or 'by hand only'} ({j.tz}), timeout {j.timeout_s:g} s, "
        f"{j.retries} retries, uploaded by {j.created_by}"
    )
