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

README = Path(__file__).parents[2] / "README.md"
pytestmark = pytest.mark.xdist_group("ray")  # its Ray example starts a local cluster: not beside the Ray tests' one
BLOCK = re.compile(r"```(python|bash)\n(.*?)```", re.DOTALL)
EXPORT = re.compile(r"^export ([A-Z_]+)=(.+)$")


def test_readme_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall(README.read_text())
    assert any(lang == "bash" for lang, _ in blocks) and any(lang == "python" for lang, _ in blocks)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FINALMILE_HOME", raising=False)
    monkeypatch.delenv("FINALMILE_DATABASE_URL", raising=False)
    monkeypatch.setenv("FINALMILE_TOKEN", "")  # set by the README's `export`, restored after the test
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINALMILE_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    namespace: dict[str, object] = {}
    background: list[subprocess.Popen[bytes]] = []
    try:
        run_blocks(blocks, namespace, env, background)
    finally:
        for process in background:  # the shell and the server it started share a process group
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=10)
    assert (tmp_path / "predictions.parquet").exists() and (tmp_path / "scored.parquet").exists()
    assert (tmp_path / ".finalmile" / "finalmile.db").exists()


def run_blocks(
    blocks: list[tuple[str, str]],
    namespace: dict[str, object],
    env: dict[str, str],
    background: list[subprocess.Popen[bytes]],
) -> None:
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
            result = subprocess.run(line, shell=True, env=env, capture_output=True, text=True, timeout=300)
            assert result.returncode == 0, f"{line}\n{result.stdout}\n{result.stderr}"
