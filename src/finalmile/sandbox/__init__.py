"""Running uploaded code with only its workspace's reach: a child process inside Debian's bubblewrap.

Why bubblewrap (Linux namespaces) rather than an unprivileged user and file permissions: a namespace shows the
child a file tree made of what it may read and nothing else, whoever owns the store's files and whatever their
modes, and needs no user made on the machine nor a server started as root. The child sees the system's libraries
and the interpreter read-only, the folders it is handed (a model's unpacked artifact, a job's code), a private
`/tmp`, its own process tree (it can signal nothing of the server's), and no network unless it needs one (a job
talks to the server and to its connections). The store's home, the metadata database file and every other
workspace are simply absent. Its environment is only what the caller passes: never the server's, so no
`FINALMILE_SECRET_KEY`, database URL or token leaks into it.

`FINALMILE_SANDBOX` chooses: `auto` (bubblewrap when it is installed, else a plain child process with the same
clean environment, and a warning), `bwrap` (refuse to run uploaded code without it) or `off` (a plain child).
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from finalmile.errors import SandboxUnavailable

log = logging.getLogger(__name__)

_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
"""Where the system's programs and libraries live: read-only, as they are (symlinks stay symlinks)."""
_ETC = (
    "/etc/ssl", "/etc/ca-certificates", "/etc/pki", "/etc/resolv.conf", "/etc/hosts", "/etc/nsswitch.conf",
    "/etc/passwd", "/etc/group", "/etc/localtime", "/etc/alternatives", "/etc/ld.so.cache", "/etc/ld.so.conf",
    "/etc/ld.so.conf.d", "/etc/mime.types", "/etc/host.conf", "/etc/gai.conf",
)  # fmt: skip
"""What of `/etc` a program needs (certificates, name lookup, the dynamic linker): never the whole folder, which
holds the database servers' and other services' configuration."""
NOBODY = 65534


@dataclass(frozen=True)
class Reach:
    """What a sandboxed child may touch besides the system and the interpreter."""

    read: tuple[Path, ...] = ()
    """Folders and files it may read (a model's artifact, a job's environment)."""
    write: tuple[Path, ...] = ()
    """Folders it may write (its working folder)."""
    network: bool = False
    """A job reaches the server and its databases; a model reaches nothing."""
    hide: tuple[Path, ...] = ()
    """Folders that must stay unseen even when a folder above them is readable (the store's root home, which
    holds every workspace); what `read` names inside them is still bound."""
    env: Mapping[str, str] = field(default_factory=dict)
    """Its whole environment, beside PATH, HOME, LANG and TMPDIR."""
    devices: tuple[str, ...] = ()
    """Device files it may use (a GPU's, for a PyTorch model)."""


def bwrap_path() -> str | None:
    """bubblewrap's program, or None where it is not installed (macOS, a minimal image)."""
    return shutil.which("bwrap")


def mode(setting: str) -> str:
    """`bwrap` or `plain`: how uploaded code runs under the `sandbox` setting (`auto`, `bwrap` or `off`)."""
    if setting == "off":
        return "plain"
    if bwrap_path() is not None:
        return "bwrap"
    if setting == "bwrap":
        raise SandboxUnavailable(
            "FINALMILE_SANDBOX=bwrap but bubblewrap is not installed (apt-get install bubblewrap): uploaded code "
            "is not run without it"
        )
    _warn_once()
    return "plain"


def command(argv: list[str], reach: Reach, setting: str, cwd: Path | None = None) -> tuple[list[str], dict[str, str]]:
    """`argv` wrapped so that it runs with `reach` only, and the environment to start it with."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
    } | dict(reach.env)
    if mode(setting) == "plain":
        return argv, env
    wrapped = [
        bwrap_path() or "bwrap", "--unshare-user", "--unshare-ipc", "--unshare-pid", "--unshare-uts",
        "--unshare-cgroup-try", "--uid", str(NOBODY), "--gid", str(NOBODY), "--die-with-parent", "--new-session",
        "--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp",
    ]  # fmt: skip
    if not reach.network:
        wrapped.append("--unshare-net")
    for path in _SYSTEM:
        if os.path.islink(path):
            wrapped += ["--symlink", os.readlink(path), path]
        elif os.path.exists(path):
            wrapped += ["--ro-bind", path, path]
    for path in _ETC:
        wrapped += ["--ro-bind-try", path, path]
    interpreter = interpreter_paths()
    for path in interpreter:
        wrapped += ["--ro-bind-try", path, path]
    for hidden in reach.hide:  # an empty folder over it where a folder above it is bound; before what it may read
        if hidden.exists() and any(_within(hidden, Path(p)) for p in interpreter):
            wrapped += ["--tmpfs", str(hidden.resolve())]
    for path in _unique(map(str, reach.read)):
        wrapped += ["--ro-bind-try", path, path]
    for path in _unique(map(str, reach.write)):
        wrapped += ["--bind", path, path]
    for device in reach.devices:
        wrapped += ["--dev-bind-try", device, device]
    if cwd is not None:
        wrapped += ["--chdir", str(cwd)]
    return [*wrapped, "--", *argv], env


def gpus() -> tuple[str, ...]:
    """NVIDIA's device files where the machine has them: a sandboxed model may run on the GPU, nothing more."""
    return tuple(str(p) for p in sorted(Path("/dev").glob("nvidia*")))


def interpreter_paths() -> list[str]:
    """What the interpreter needs to import what the server imports: its prefixes, its site folders, the folder
    finalmile is imported from, and every folder on `sys.path` (a pickle names classes of the server's importable
    modules). One of them may hold a store's home: the caller hides it (`Reach.hide`)."""
    import site

    found = [sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))]
    found += [*site.getsitepackages(), str(Path(__file__).resolve().parents[2])]
    found += [p if p else os.getcwd() for p in sys.path if not p or os.path.isabs(p)]
    return _unique(q for p in found if os.path.isdir(p) for q in (p, os.path.realpath(p)))


def _within(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(Path(folder).resolve())
    except ValueError:
        return False
    return True


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


_warned: list[bool] = []


def _warn_once() -> None:
    if not _warned:
        _warned.append(True)
        log.warning(
            "bubblewrap is not installed: uploaded code (jobs, Python models, pickles) runs in a plain child process "
            "with a clean environment but the server's file access; install it (apt-get install bubblewrap) or set "
            "FINALMILE_SANDBOX=bwrap to refuse"
        )
