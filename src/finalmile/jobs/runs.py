"""Running a job: its code unpacked into a temporary folder, `main(ctx)` in a child process with a timeout,
retried with back-off (1 s, 2 s, 4 s, …), stdout and stderr captured as the run's log; and which cron slot is due.
"""

from __future__ import annotations

import ast
import ctypes
import io
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from urllib.parse import quote, quote_plus, unquote, unquote_plus
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from finalmile.errors import InvalidInputError
from finalmile.jobs.environments import EnvironmentFailed, job_python
from finalmile.jobs.store import JobRecord, JobStore, RunRecord
from finalmile.sandbox import Reach, command

STALE_AFTER_S = 30.0
"""A run whose scheduler has not beaten for this long is `lost` (the process died); it is never run again.
Its scheduler beats six times in that span."""


MAX_JOB_TIMEOUT_S = 7 * 86_400.0
"""A job's timeout is at most a week: longer is a mistake, and past about 2**31 s a child's timeout overflows."""


def runner_name() -> str:
    """This process, as the runs table names who ran a job: the host and pid."""
    return f"{socket.gethostname()}-{os.getpid()}"


def check_schedule(cron: str, tz: str) -> None:
    """A 4xx naming the field for a cron expression or time zone that is not one."""
    if not croniter.is_valid(cron):
        raise InvalidInputError(
            f"cron: {cron!r} is not a cron expression (five fields, e.g. '0 2 * * *'; a sixth, last, is seconds)",
            {"field": "cron"},
        )
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(f"tz: unknown time zone {tz!r} (e.g. 'UTC', 'Europe/Paris')", {"field": "tz"}) from None


def last_slot(cron: str, tz: str, now: datetime) -> datetime:
    """The latest time at or before `now` that the schedule names (cron read in `tz`), as UTC."""
    local = now.astimezone(ZoneInfo(tz))
    slot: datetime = croniter(cron, local + timedelta(microseconds=1)).get_prev(datetime)
    return slot.astimezone(ZoneInfo("UTC"))


def execute(
    store: JobStore,
    job: JobRecord,
    code: bytes,
    run: RunRecord,
    child: JobChild,
    secrets: Sequence[str] = (),
    stale_after_s: float = STALE_AFTER_S,
) -> RunRecord:
    """Run `job` for the claimed `run` until it succeeds or its attempts are spent; records the outcome, with
    every form of each of `secrets` (the connections' passwords) masked in the captured log."""
    stop = threading.Event()
    attempts = 0

    def beat() -> None:
        while not stop.wait(stale_after_s / 6):
            store.beat(run.id, attempts)

    threading.Thread(target=beat, name=f"job-{job.name}-heartbeat", daemon=True).start()
    log = io.StringIO()
    status, exit_code = "failed", None
    try:
        with tempfile.TemporaryDirectory(prefix=f"finalmile-job-{job.name}-") as folder:
            _unpack(job.kind, code, Path(folder))
            python, environment = sys.executable, None
            if job.requirements:
                python, output = job_python(child.home, job.requirements, job.timeout_s)
                environment = Path(python).parents[1]
                log.write(output)
            for attempts in range(1, job.retries + 2):
                if attempts > 1:
                    time.sleep(min(2.0 ** (attempts - 2), 60.0))
                log.write(f"--- attempt {attempts} at {datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}\n")
                status, exit_code, output = _attempt(python, environment, job, Path(folder), run, child)
                log.write(output)
                if status == "succeeded":
                    break
    except EnvironmentFailed as exc:
        log.write(str(exc))
    except Exception as exc:  # unpacking a bad zip, say: the run fails with the reason, the scheduler goes on
        log.write(f"{type(exc).__name__}: {exc}\n")
    finally:
        stop.set()
    return store.finish(run.id, status, exit_code, mask_secrets(log.getvalue(), secrets), attempts)


@dataclass(frozen=True)
class JobChild:
    """How a job's child process is started: in the sandbox (`sandbox` setting), with `env` as its whole
    environment (the gateway's URL and secret, its workspace's connections), the store's `home` unseen."""

    env: dict[str, str]
    home: Path
    sandbox: str


def mask_secrets(text: str, secrets: Sequence[str]) -> str:
    """`text` with every form of each secret a job could print as `***`: as stored (a URL's password is
    URL-encoded, `Pa%40ss`), decoded (`Pa@ss`) and encoded again either way (`quote`, `quote_plus`). Forms under 3
    characters are left: they would mask ordinary words."""
    forms = {form for secret in secrets for form in secret_forms(secret) if len(form) >= 3}
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def secret_forms(secret: str) -> set[str]:
    """The ways a secret can be written: raw, URL-decoded, and URL-encoded (path and form style) of both."""
    raw = {secret, unquote(secret), unquote_plus(secret)}
    encoded = {encode(form, safe=safe) for form in raw for encode in (quote, quote_plus) for safe in ("", "/")}
    return raw | encoded


def _die_with_parent() -> None:
    """In the child, before the job starts: the kernel kills it when its scheduler dies (Linux's
    PR_SET_PDEATHSIG), so a scheduler killed mid-run leaves no orphan still writing."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None  # loaded before any fork


def _attempt(
    python: str, environment: Path | None, job: JobRecord, folder: Path, run: RunRecord, child: JobChild
) -> tuple[str, int | None, str]:
    slot = run.slot.isoformat() if run.slot else ""
    reach = Reach(
        read=(environment,) if environment else (), write=(folder,), network=True, hide=(child.home,), env=child.env
    )
    argv = [python, "-m", "finalmile.cli.job_child", str(folder), job.name, slot]
    wrapped, env = command(argv, reach, child.sandbox, cwd=folder)
    try:
        done = subprocess.run(
            wrapped, env=env, cwd=folder, capture_output=True, text=True, timeout=job.timeout_s, check=False,
            preexec_fn=_die_with_parent,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        output = _text(exc.stdout) + _text(exc.stderr)
        return "timed_out", None, output + f"killed after the {job.timeout_s:g} s timeout\n"
    return ("succeeded" if done.returncode == 0 else "failed"), done.returncode, done.stdout + done.stderr


def _text(value: bytes | str | None) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def check_code(kind: str, code: bytes) -> None:
    """Refuse, when it is uploaded, code no run could start: a .py that is not UTF-8 Python or defines no `main`,
    a .zip that is not one, has no main.py (or job.py) at its top or a member that points outside its folder."""
    if kind == "py":
        try:
            tree = ast.parse(code.decode(), "job.py")
        except (UnicodeDecodeError, SyntaxError, ValueError) as exc:
            raise InvalidInputError(f"file: not a Python file: {exc}", {"field": "file"}) from None
        if not any(_binds_main(node) for node in tree.body):
            raise InvalidInputError("file: defines no main(ctx) at its top level", {"field": "file"})
        return
    if kind != "zip":
        return
    try:
        with zipfile.ZipFile(io.BytesIO(code)) as archive:
            members = archive.namelist()
    except zipfile.BadZipFile as exc:
        raise InvalidInputError(f"file: not a zip: {exc}", {"field": "file"}) from None
    for member in members:
        path = PurePosixPath(member.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts:
            raise InvalidInputError(f"file: the zip's {member!r} points outside its folder", {"field": "file"})
    if not {"main.py", "job.py"} & set(members):
        raise InvalidInputError("file: the zip has no main.py (or job.py) at its top", {"field": "file"})


def _binds_main(node: ast.stmt) -> bool:
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        return node.name == "main"
    if isinstance(node, ast.Import | ast.ImportFrom):
        return any((alias.asname or alias.name) == "main" for alias in node.names)
    if isinstance(node, ast.Assign):
        return any(isinstance(t, ast.Name) and t.id == "main" for t in node.targets)
    return False


def _unpack(kind: str, code: bytes, folder: Path) -> None:
    check_code(kind, code)  # code stored before uploads were checked
    if kind == "py":
        (folder / "job.py").write_bytes(code)
        return
    with zipfile.ZipFile(io.BytesIO(code)) as archive:
        archive.extractall(folder)


def run_due(
    store: JobStore,
    now: datetime,
    start: Callable[[JobRecord, bytes, RunRecord], threading.Thread],
    stale_after_s: float = STALE_AFTER_S,
) -> list[threading.Thread]:
    """Claim, and `start` in a thread, every scheduled job whose latest slot is due; returns the threads. A slot
    past its deadline, or due while the job still runs, is recorded as skipped (once, like any slot)."""
    started = []
    for job in store.all():
        if job.cron is None:
            continue
        slot = last_slot(job.cron, job.tz, now)
        if slot < job.updated_at:
            continue  # scheduled after that slot: the first run is the next one
        if (now - slot).total_seconds() > job.deadline_s or store.running(job.name, stale_after_s):
            store.claim(job.name, slot, runner_name(), status="skipped")
            continue
        run = store.claim(job.name, slot, runner_name())
        if run is None:
            continue  # another scheduler has this slot
        _, code = store.get(job.name)
        started.append(start(job, code, run))
    return started
