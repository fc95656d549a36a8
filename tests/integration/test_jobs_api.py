"""Jobs and connections over HTTP: the remote client's verbs on a real server with tokens, each role held to its
permission, bad input a 4xx naming the field, and a run's log with the connection's secret masked."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from finalmile import Client
from finalmile.errors import FinalmileError

JOB = """
def main(ctx):
    ctx.log("hello from", ctx.job, "slot", ctx.slot)
    ctx.log("warehouse:", ctx.connections["warehouse"])
"""


def test_jobs_and_connections_through_the_http_api(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    key = Fernet.generate_key().decode()
    with Client(home=home) as client:
        _, owner = client.services.init_access("alice")
        client.services.set_member("victor", "default", "viewer")
        _, viewer = client.services.create_token("victor", "default", "viewer", "dashboard")
    server = server_factory(home, env={"FINALMILE_SECRET_KEY": key}, auth=True)
    (tmp_path / "hello.py").write_text(JOB)
    (tmp_path / "requirements.txt").write_text("# nothing beyond the server's own packages\n")
    with Client(url=server.url, token=owner) as alice:
        made = alice.create_connection("warehouse", "postgres", "postgresql://etl:hunter22@db:5432/dw")
        assert made.url == "postgresql://etl:***@db:5432/dw"
        assert [c.url for c in alice.connections()] == [made.url]
        record = alice.upload_job("hello", tmp_path / "hello.py", tmp_path / "requirements.txt")
        assert record.kind == "py" and record.requirements == "# nothing beyond the server's own packages"
        scheduled = alice.schedule_job("hello", "0 2 * * *", tz="Europe/Paris", retries=1)
        assert (scheduled.cron, scheduled.tz, scheduled.retries) == ("0 2 * * *", "Europe/Paris", 1)
        started = alice.run_job("hello", wait=False)
        assert started.status == "running" and started.slot is None
        finished = alice.run_job("hello")
        assert finished.status == "succeeded" and finished.exit_code == 0, finished.log
        assert "hello from hello slot None" in finished.log
        assert "warehouse: postgresql://etl:***@db:5432/dw" in finished.log and "hunter22" not in finished.log
        runs = alice.job_runs("hello")
        assert [r.id for r in runs] == [finished.id, started.id] and runs[0].duration_s is not None
        assert [j.name for j in alice.jobs()] == ["hello"]
        with pytest.raises(FinalmileError, match="cron") as bad:
            alice.schedule_job("hello", "every night")
        assert bad.value.status_code == 422
        with pytest.raises(FinalmileError, match="timeout_s") as bad:
            alice.schedule_job("hello", None, timeout_s=0)
        assert bad.value.status_code == 422
        with pytest.raises(FinalmileError, match="no job named 'nope'") as missing:
            alice.job_runs("nope")
        assert missing.value.status_code == 404
        with pytest.raises(FinalmileError, match="run 99999") as missing:
            alice.job_run("hello", 99999)
        assert missing.value.status_code == 404
        (tmp_path / "notes.txt").write_text("not code")
        with pytest.raises(FinalmileError, match="file: give a .py file") as bad:
            alice.upload_job("notes", tmp_path / "notes.txt")
        assert bad.value.status_code == 422
        deadline = time.monotonic() + 60  # the run started without waiting may still be going on a busy machine
        while any(r.status == "running" for r in alice.job_runs("hello")) and time.monotonic() < deadline:
            time.sleep(0.2)
    with Client(url=server.url, token=viewer) as victor:
        assert [r.status for r in victor.job_runs("hello")] == ["succeeded", "succeeded"]  # a viewer reads
        assert "hunter22" not in str(victor.connections())
        for refused in (
            lambda: victor.run_job("hello"),
            lambda: victor.upload_job("mine", tmp_path / "hello.py"),
            lambda: victor.schedule_job("hello", None),
            lambda: victor.delete_job("hello"),
            lambda: victor.create_connection("w2", "postgres", "postgresql://x@db/dw"),
        ):
            with pytest.raises(FinalmileError, match="is a viewer") as denied:
                refused()
            assert denied.value.status_code == 403
    anonymous = httpx.get(f"{server.url}/api/v1/jobs")
    assert anonymous.status_code == 401
    with Client(url=server.url, token=owner) as alice:
        alice.delete_job("hello")
        assert alice.jobs() == []
        alice.delete_connection("warehouse")
    with Client(home=home) as local:  # every change is in the audit trail, by whom
        trail = [(e.actor, e.action) for e in local.services.audit.entries()]
        assert ("alice (token 1)", "upload job") in trail and ("alice (token 1)", "run job") in trail
        assert ("alice (token 1)", "delete job") in trail and not any(a.startswith("victor") for a, _ in trail)
