"""Two `finalmile serve` processes on one PostgreSQL store share a job's schedule: each slot runs exactly once, and
when the server running a slot is killed with `kill -9` mid-run, that slot is not run again (it is marked `lost`,
and its child died with it), while the other server goes on with the next slots."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from finalmile import Client

JOB = """
import os, pathlib, time

def main(ctx):
    marks = pathlib.Path({marks!r})
    slot = ctx.slot.replace(":", "")
    (marks / f"start_{{slot}}_{{os.getppid()}}").touch()
    time.sleep(3)
    (marks / f"end_{{slot}}_{{os.getppid()}}").touch()
"""


def _marks(folder: Path, kind: str) -> list[tuple[str, int]]:
    return sorted((p.name.split("_")[1], int(p.name.split("_")[2])) for p in folder.glob(f"{kind}_*"))


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_each_slot_runs_once_and_a_killed_schedulers_slot_is_not_run_again(
    tmp_path: Path, database_url: str, server_factory
) -> None:  # type: ignore[no-untyped-def]
    home, marks = tmp_path / "home", tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "tick.py").write_text(JOB.format(marks=str(marks)))
    with Client(home=home, database_url=database_url) as client:
        client.upload_job("tick", tmp_path / "tick.py")
        client.schedule_job("tick", "* * * * * */5", deadline_s=60)  # every five seconds
    # The job marks a folder of the test's and names its server by its parent's pid: outside the sandbox, which
    # would hide both (tests/unit/jobs/test_job_sandbox.py is the sandbox's own test).
    env = {"FINALMILE_DATABASE_URL": database_url, "FINALMILE_JOB_LOST_AFTER_S": "3", "FINALMILE_SANDBOX": "off"}
    servers = {s.process.pid: s for s in (server_factory(home, env), server_factory(home, env))}

    deadline = time.monotonic() + 30
    while not (started := _marks(marks, "start")) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert started, "no slot started in 30 s"
    killed_slot, killed_pid = started[0]
    servers[killed_pid].process.send_signal(signal.SIGKILL)  # mid-run: the job sleeps 3 s
    servers[killed_pid].process.wait()
    (survivor,) = (pid for pid in servers if pid != killed_pid)

    deadline = time.monotonic() + 40
    with Client(home=home, database_url=database_url) as client:
        while time.monotonic() < deadline:
            runs = client.job_runs("tick", limit=100)
            by_slot = {r.slot.isoformat().replace(":", ""): r for r in runs if r.slot is not None}
            after = [r for slot, r in by_slot.items() if slot > killed_slot and r.status == "succeeded"]
            if len(after) >= 2:
                break
            time.sleep(0.3)
    assert len(after) >= 2 and all(r.runner.endswith(f"-{survivor}") for r in after), runs
    assert len(by_slot) == len(runs)  # one run row per slot
    assert by_slot[killed_slot].status == "lost" and by_slot[killed_slot].runner.endswith(f"-{killed_pid}")
    starts = [slot for slot, _ in _marks(marks, "start")]
    assert len(starts) == len(set(starts)), f"a slot ran twice: {starts}"
    assert killed_slot not in [slot for slot, _ in _marks(marks, "end")]  # its child died with its server
    assert {pid for slot, pid in _marks(marks, "end") if slot > killed_slot} == {survivor}
