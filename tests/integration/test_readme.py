"""The README's examples run as written: its ```python blocks in one namespace, its ```bash lines as commands.

The ```shell block (make demo / make test) is the set-up itself and is not run here.
"""

from __future__ import annotations

import linecache
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from finalmile import Client
from finalmile.cli.common import LOCAL_ONLY

README = Path(__file__).parents[2] / "README.md"
pytestmark = pytest.mark.xdist_group("ray")  # its Ray example starts a local cluster: not beside the Ray tests' one
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)
EXPORT = re.compile(r"^export ([A-Z_]+)=(.+)$")


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme_env, namespace, background = _setup(tmp_path, monkeypatch)
    try:
        run_blocks(BLOCK.findall(README.read_text()), namespace, readme_env, background)
    finally:
        _stop(background)
    assert (tmp_path / "predictions.parquet").exists() and (tmp_path / "scored.parquet").exists()
    assert (tmp_path / ".finalmile" / "finalmile.db").exists()


def test_readme_cli_against_a_live_server_with_a_token(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README again, every `finalmile` command but the local ones sent to a server with `--url`/`--token` (from
    the environment): the server is up from the start, on the store the Python blocks set up."""
    readme_env, namespace, background = _setup(tmp_path, monkeypatch)
    key = subprocess.run(
        [sys.executable, "-m", "finalmile", "connections", "keygen"], capture_output=True, text=True, check=True
    ).stdout.strip()
    readme_env["FINALMILE_SECRET_KEY"] = key  # the server's key: connections are encrypted there
    token = subprocess.run(
        [sys.executable, "-m", "finalmile", "admin", "init"],
        env=readme_env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.strip()
    assert token.startswith("fm_"), token
    background.append(
        subprocess.Popen(
            [sys.executable, "-m", "finalmile", "serve", "--port", "8765", "--grpc-port", "8766"],
            env=readme_env,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    )
    readme_env["FINALMILE_TOKEN"] = os.environ["FINALMILE_TOKEN"] = token
    ready = "curl -s --retry 60 --retry-connrefused --retry-delay 1 localhost:8765/v2/health/live"
    assert subprocess.run(ready, shell=True, capture_output=True, timeout=120).returncode == 0
    try:
        run_blocks(BLOCK.findall(README.read_text()), namespace, readme_env, background, remote="http://127.0.0.1:8765")
    finally:
        _stop(background)
    with Client(home=tmp_path / ".finalmile") as store:
        uploads = store.audit("model fraud")
    assert any("(token 1)" in actor for actor in uploads.actor), list(uploads.actor)  # the CLI's upload, by the server


def _setup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, str], dict[str, object], list[subprocess.Popen[bytes]]]:
    blocks = BLOCK.findall(README.read_text())
    assert any(lang == "bash" for lang, _ in blocks) and any(lang == "python" for lang, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FINALMILE_HOME", raising=False)
    monkeypatch.delenv("FINALMILE_DATABASE_URL", raising=False)
    monkeypatch.setenv("FINALMILE_TOKEN", "")  # set by the README's `export`, restored after the test
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINALMILE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env, {}, []


def _stop(background: list[subprocess.Popen[bytes]]) -> None:
    for process in background:  # the shell and the server it started share a process group
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=10)


def run_blocks(
    blocks: list[tuple[str, str]],
    namespace: dict[str, object],
    env: dict[str, str],
    background: list[subprocess.Popen[bytes]],
    remote: str | None = None,
) -> None:
    """`remote`: a server already running, to which every `finalmile` command but the local ones is sent."""
    for i, (lang, code) in enumerate(blocks):
        if lang == "python":
            # Register the block's text the way IPython registers a notebook cell, so classes defined in it
            # have a findable source (finalmile stores a Python model's source with it).
            filename = f"<README block {i}>"
            linecache.cache[filename] = (len(code), None, code.splitlines(keepends=True), filename)
            exec(compile(code, filename, "exec"), namespace)
            continue
        for line in code.splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            if remote and ("admin init" in line or ("finalmile serve" in line and line.rstrip().endswith("&"))):
                continue  # the server runs already, and its owner token is in the environment
            exported = EXPORT.match(line)
            if exported:  # `export NAME=$(command)`: later lines and the Python blocks see it
                value = subprocess.run(
                    f"printf %s {exported.group(2)}", shell=True, env=env, capture_output=True, text=True, timeout=300
                )
                assert value.returncode == 0 and value.stdout, f"{line}\n{value.stderr}"
                env[exported.group(1)] = os.environ[exported.group(1)] = value.stdout.strip()
                continue
            if line.rstrip().endswith("&"):  # a server: keep it running for the blocks that follow
                command = line.rstrip()[:-1]
                background.append(
                    subprocess.Popen(
                        command,
                        shell=True,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                )
                continue
            result = subprocess.run(
                line, shell=True, env=_target(env, line, remote), capture_output=True, text=True, timeout=300
            )
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"


def _target(env: dict[str, str], line: str, remote: str | None) -> dict[str, str]:
    """Where a line's command works: the server, unless it is a local command (`serve`, `predict`, `workspaces`…),
    names another workspace than the token's, or deploys on Ray (a server's Ray is chosen when it starts)."""
    words = line.split()
    if not remote or words[0] != "finalmile" or "--workspace" in words or "ray" in words:
        return env
    if " ".join(words[1:2]) in LOCAL_ONLY or " ".join(words[1:3]) in LOCAL_ONLY:
        return env
    return env | {"FINALMILE_URL": remote}
