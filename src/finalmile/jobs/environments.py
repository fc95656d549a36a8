"""A job's own packages: one virtual environment per distinct requirements text, made once under the home and
reused by every run (and every server sharing the home). It sees the server's packages beneath its own, so a job
adds or pins a few packages without reinstalling finalmile and its stack; pip skips what is already satisfied."""

from __future__ import annotations

import fcntl
import hashlib
import shutil
import site
import subprocess
import sys
from pathlib import Path

ENVIRONMENTS = Path("jobs") / "environments"


class EnvironmentFailed(Exception):
    """pip could not install the requirements: the message is its output, for the run's log."""


def job_python(home: Path, requirements: str, timeout_s: float) -> tuple[str, str]:
    """The interpreter of the environment for `requirements`, made now if it is not ready, and what making it
    printed (empty when it was reused). Two runs asking at once wait for one another on a lock file."""
    digest = hashlib.sha256(requirements.encode()).hexdigest()[:16]
    root = home / ENVIRONMENTS
    root.mkdir(parents=True, exist_ok=True)
    folder = root / digest
    python = folder / "bin" / "python"
    with open(root / f"{digest}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (folder / ".ready").exists():
            return str(python), ""
        shutil.rmtree(folder, ignore_errors=True)  # half made by a run that died
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, timeout=timeout_s)
        purelib = subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True, timeout=timeout_s,
        ).stdout.strip()  # fmt: skip
        # `import` lines of a .pth file run at start-up: addsitedir also reads the server's own .pth files
        # (an editable finalmile among them), after the environment's own site-packages.
        server_sites = [*site.getsitepackages(), site.getusersitepackages()]
        lines = [f"import site; site.addsitedir({path!r})" for path in server_sites if Path(path).is_dir()]
        (Path(purelib) / "finalmile_server_packages.pth").write_text("\n".join(lines) + "\n")
        wanted = folder / "requirements.txt"
        wanted.write_text(requirements + "\n")
        done = subprocess.run(
            [str(python), "-m", "pip", "--disable-pip-version-check", "install", "-r", str(wanted)],
            capture_output=True, text=True, timeout=timeout_s, check=False,
        )  # fmt: skip
        output = f"$ pip install -r requirements.txt\n{done.stdout}{done.stderr}"
        if done.returncode != 0:
            shutil.rmtree(folder, ignore_errors=True)
            raise EnvironmentFailed(output + f"pip exited with {done.returncode}: the job did not run\n")
        (folder / ".ready").write_text(requirements)
        return str(python), output
