"""Scheduled jobs on SQLite and PostgreSQL: `main(ctx)` in a child process that gets the client and the stored
connections; the log, exit code, timeout and retries recorded; each cron slot claimed once however many schedulers
look; a missed slot past its deadline skipped; no run while the previous one still goes."""

from __future__ import annotations

import io
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.config import FinalmileSettings
from finalmile.errors import InvalidInputError, NotFoundError
from finalmile.jobs.runs import last_slot
from tests.fixtures import N_FEATURES, tabular
from tests.unit.cli.test_cli import run

SCORE = f"""
import pandas as pd

N_FEATURES = {N_FEATURES}

def main(ctx):
    rows = pd.DataFrame({{f"x{{i}}": [0.5, -2.0] for i in range(N_FEATURES)}})
    scores = ctx.client.pipeline("scoring").infer(rows)
    ctx.log("warehouse at", ctx.connections["warehouse"].split("@")[-1])
    ctx.log("scored", len(scores), "rows; first score", round(float(scores.score[0]), 3))
    ctx.log("careless print of the URL:", ctx.connections["warehouse"])
    from urllib.parse import quote, urlsplit, unquote
    ledger = unquote(urlsplit(ctx.connections["ledger"]).password)
    ctx.log("decoded:", ledger, "encoded:", quote(ledger), "stored:", urlsplit(ctx.connections["ledger"]).password)
"""


@pytest.fixture
def jobs_client(home: Path, database_url: str) -> Client:
    key = Fernet.generate_key().decode()
    client = Client(settings=FinalmileSettings(home=home, database_url=database_url, secret_key=key))
    X, y = tabular(100)
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    client.build_pipeline("scoring").add_model_step("m:1").deploy()
    client.services.create_connection("warehouse", "postgres", "postgresql://scorer:s3cr3t@db.internal:5432/sales")
    client.services.create_connection("ledger", "postgres", "postgresql://clerk:Pa%40ss%2Fw0rd@db.internal:5432/l")
    return client


def job_file(tmp_path: Path, name: str, code: str) -> Path:
    path = tmp_path / name
    path.write_text(code)
    return path


def test_a_job_scores_through_the_client_with_its_connections(
    jobs_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FINALMILE_SECRET_KEY", jobs_client.settings.secret_key or "")
    jobs = jobs_client.services.jobs
    jobs.upload("nightly", job_file(tmp_path, "nightly.py", SCORE))
    result = jobs.run("nightly")
    assert result.status == "succeeded" and result.exit_code == 0, result.log
    assert "warehouse at db.internal:5432/sales" in result.log and "scored 2 rows" in result.log
    assert "careless print of the URL: postgresql://scorer:***@db.internal:5432/sales" in result.log
    assert "s3cr3t" not in result.log  # the captured log never shows a connection's password
    # nor in any form: raw (`Pa@ss/w0rd`, what the driver gets), URL-encoded either way, as stored
    for form in ("Pa@ss/w0rd", "Pa%40ss%2Fw0rd", "Pa%40ss/w0rd", "ss/w0"):
        assert form not in result.log, form
    logged = jobs_client.query("SELECT count(*) AS n FROM logs WHERE pipeline = 'scoring'")
    assert int(logged.n[0]) == 2  # the job's inferences are logged like any other
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("helpers.py", "def greet():\n    return 'hello from a helper module'\n")
        z.writestr("main.py", "from helpers import greet\n\ndef main(ctx):\n    ctx.log(greet(), ctx.job)\n")
    jobs.upload("bundle", archive)
    assert "hello from a helper module bundle" in jobs.run("bundle").log
    actions = [e.action for e in jobs_client.services.audit.entries()][-4:]
    assert actions == ["upload job", "run job", "upload job", "run job"]
    jobs_client.close()


def test_failures_retries_and_timeouts_are_recorded(jobs_client: Client, tmp_path: Path) -> None:
    jobs = jobs_client.services.jobs
    jobs.upload("broken", job_file(tmp_path, "broken.py", "def main(ctx):\n    raise ValueError('no rows today')\n"))
    jobs.schedule("broken", None, retries=1)
    failed = jobs.run("broken")
    assert failed.status == "failed" and failed.exit_code == 1 and failed.attempts == 2
    assert failed.log.count("ValueError: no rows today") == 2 and "--- attempt 2" in failed.log
    jobs.upload("slow", job_file(tmp_path, "slow.py", "import time\n\ndef main(ctx):\n    time.sleep(60)\n"))
    jobs.schedule("slow", None, timeout_s=1)
    slow = jobs.run("slow")
    assert slow.status == "timed_out" and slow.exit_code is None and "1 s timeout" in slow.log
    assert slow.duration_s is not None and slow.duration_s < 30
    jobs.store.upload("nomain", "py", b"x = 1\n", "test")  # stored before uploads were checked
    stale = jobs.run("nomain")
    assert stale.status == "failed" and "defines no main(ctx)" in stale.log
    assert [r.status for r in jobs.store.runs("broken")] == ["failed"]
    jobs_client.close()


def test_bad_input_names_the_field(jobs_client: Client, tmp_path: Path) -> None:
    jobs = jobs_client.services.jobs
    with pytest.raises(InvalidInputError, match="file"):
        jobs.upload("j", tmp_path / "missing.py")
    with pytest.raises(InvalidInputError, match="file: give a .py file"):
        jobs.upload("j", job_file(tmp_path, "j.txt", "x"))
    with pytest.raises(InvalidInputError, match="name"):
        jobs.upload("bad name!", job_file(tmp_path, "j.py", "def main(ctx): pass\n"))
    refused = {  # code no run could start is refused when it is uploaded, not found out at 2 a.m.
        "nomain.py": (b"x = 1\n", "defines no main"),
        "syntax.py": (b"def main(ctx:\n", "not a Python file"),
        "utf16.py": ("def main(ctx): pass\n".encode("utf-16"), "not a Python file"),
        "fake.zip": (b"PK not a zip", "not a zip"),
        "nomain.zip": (zipped({"helpers.py": "x = 1"}), "no main.py"),
        "escape.zip": (zipped({"main.py": "def main(ctx): pass", "../up.py": ""}), "'../up.py' points outside"),
    }
    for name, (code, message) in refused.items():
        with pytest.raises(InvalidInputError, match=f"file: .*{message}"):
            jobs.upload_code("j", name, code)
    assert [j.name for j in jobs.store.all()] == []
    jobs.upload_code("imported", "j.py", b"from helpers import main\n")  # main may come from elsewhere
    jobs.upload("j", tmp_path / "j.py")
    with pytest.raises(InvalidInputError, match="cron"):
        jobs.schedule("j", "every night")
    with pytest.raises(InvalidInputError, match="tz"):
        jobs.schedule("j", "0 2 * * *", tz="Mars/Olympus")
    with pytest.raises(InvalidInputError, match="timeout_s"):
        jobs.schedule("j", "0 2 * * *", timeout_s=0)
    with pytest.raises(NotFoundError, match="nope"):
        jobs.schedule("nope", "0 2 * * *")
    jobs_client.close()


def test_each_slot_runs_once_whatever_the_schedulers(jobs_client: Client, tmp_path: Path) -> None:
    jobs = jobs_client.services.jobs
    jobs.upload("tick", job_file(tmp_path, "tick.py", "def main(ctx):\n    ctx.log('tick', ctx.slot)\n"))
    jobs.schedule("tick", "*/5 * * * *", deadline_s=600)
    now = datetime.now(UTC) + timedelta(minutes=5)  # the next slot is due
    slot = last_slot("*/5 * * * *", "UTC", now)
    second = Client(settings=jobs_client.settings)  # another server's scheduler on the same store
    started: list[threading.Thread] = []
    gate = threading.Barrier(4)

    def look(client: Client) -> None:
        gate.wait()
        started.extend(client.services.jobs.run_due(now))

    lookers = [threading.Thread(target=look, args=(c,)) for c in (jobs_client, second, jobs_client, second)]
    for t in lookers:
        t.start()
    for t in lookers:
        t.join()
    for t in started:
        t.join(60)
    assert len(started) == 1
    runs = jobs.store.runs("tick")
    assert len(runs) == 1 and runs[0].status == "succeeded" and runs[0].slot == slot
    assert f"tick {slot.isoformat()}" in runs[0].log
    assert jobs.run_due(now) == []  # the slot is taken; the next one is five minutes on
    jobs.schedule("tick", "0 * * * *", deadline_s=60)
    hour = (datetime.now(UTC) + timedelta(hours=2)).replace(minute=0, second=0, microsecond=0)  # past the */5 slot
    late = hour + timedelta(minutes=2)  # every server was down until two minutes past the slot
    assert jobs.run_due(late) == []
    skipped = jobs.store.runs("tick")[0]
    assert skipped.status == "skipped" and skipped.slot == hour  # recorded, not run late
    second.close()
    jobs_client.close()


def test_a_slot_due_while_the_job_still_runs_is_skipped(jobs_client: Client, tmp_path: Path) -> None:
    jobs = jobs_client.services.jobs
    jobs.upload("long", job_file(tmp_path, "long.py", "import time\n\ndef main(ctx):\n    time.sleep(3)\n"))
    jobs.schedule("long", "* * * * *", deadline_s=600)
    now = datetime.now(UTC) + timedelta(minutes=1)
    first = jobs.run_due(now)
    assert len(first) == 1
    assert jobs.run_due(now + timedelta(minutes=1)) == []  # the previous run is still going
    first[0].join(60)
    assert [r.status for r in jobs.store.runs("long")] == ["skipped", "succeeded"]
    jobs_client.close()


def wheel(folder: Path, name: str, version: str, code: str) -> Path:
    """A pure-Python wheel made by hand: a package a job asks for that no index has to serve."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": code,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: finalmile-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    with zipfile.ZipFile(path, "w") as z:
        for member, text in files.items():
            z.writestr(member, text)
        z.writestr(f"{info}/RECORD", "".join(f"{m},,\n" for m in [*files, f"{info}/RECORD"]))
    return path


def test_a_job_gets_its_requirements_installed_once_beside_the_servers_packages(
    sqlite_client: Client, tmp_path: Path
) -> None:
    jobs = sqlite_client.services.jobs
    helper = wheel(tmp_path, "fmjobhelper", "1.0", "def answer():\n    return 42\n")
    requirements = job_file(tmp_path, "requirements.txt", f"{helper}\n")
    code = "import fmjobhelper\nimport finalmile\n\ndef main(ctx):\n    ctx.log('answer', fmjobhelper.answer())\n"
    record = jobs.upload("needs", job_file(tmp_path, "needs.py", code), requirements)
    assert record.requirements == str(helper)
    first = jobs.run("needs")
    assert first.status == "succeeded", first.log
    assert "answer 42" in first.log and "Successfully installed fmjobhelper-1.0" in first.log
    second = jobs.run("needs")  # the environment is kept: nothing installed again
    assert second.status == "succeeded" and "pip install" not in second.log
    with pytest.raises(ModuleNotFoundError):
        __import__("fmjobhelper")  # installed for the job, not into the server's environment
    jobs.upload("plain", job_file(tmp_path, "plain.py", code))  # no requirements: the server's packages only
    assert "No module named 'fmjobhelper'" in jobs.run("plain").log
    missing = job_file(tmp_path, "missing.txt", f"{tmp_path / 'nowhere-1.0-py3-none-any.whl'}\n")
    jobs.upload("broken", job_file(tmp_path, "broken.py", code), missing)
    broken = jobs.run("broken")
    assert broken.status == "failed" and "the job did not run" in broken.log and "answer" not in broken.log
    assert jobs.run("needs").status == "succeeded"  # a failed install spoils no other environment


def test_the_cli_uploads_schedules_runs_and_lists(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (cli_env / "hello.py").write_text("def main(ctx):\n    ctx.log('hello from', ctx.job)\n")
    assert run(capsys, "jobs", "upload", "hello", str(cli_env / "hello.py"))[0] == 0
    code, out, _ = run(capsys, "jobs", "schedule", "hello", "--cron", "0 2 * * *", "--tz", "Europe/Paris")
    assert code == 0 and "0 2 * * * (Europe/Paris)" in out
    code, out, _ = run(capsys, "jobs", "run", "hello")
    assert code == 0 and "hello from hello" in out and "succeeded" in out
    code, out, _ = run(capsys, "jobs", "runs", "hello", "--log")
    assert code == 0 and "by hand" in out and "succeeded" in out and "hello from hello" in out
    assert "hello" in run(capsys, "jobs", "list")[1]
    code, _, err = run(capsys, "jobs", "schedule", "hello", "--cron", "61 * * * *")
    assert code == 1 and "cron" in err and "Traceback" not in err
    code, _, err = run(capsys, "jobs", "runs", "nope")
    assert code == 1 and "no job named 'nope'" in err
    code, _, err = run(capsys, "jobs", "upload", "hello", str(cli_env / "hello.py"), "--requirements", "nope.txt")
    assert code == 1 and "requirements: nope.txt" in err and "Traceback" not in err
    assert run(capsys, "jobs", "delete", "hello")[0] == 0
    assert "hello" not in run(capsys, "jobs", "list")[1]


def zipped(files: dict[str, str]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return buffer.getvalue()
