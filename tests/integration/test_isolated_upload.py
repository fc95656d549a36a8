"""Uploads over HTTP load the model in a child process: its code never runs in the server, a crash or a hang is a
clear 422, and the server keeps serving (issue 13)."""

from __future__ import annotations

import os
import pickle
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from finalmile import Client
from tests.integration.conftest import Server, start_server


class Spy:
    """A pickled object that, when loaded, writes the loading process's pid to a file (what a hostile pickle does)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):  # type: ignore[no-untyped-def]
        code = f"open({self.path!r}, 'w').write(str(__import__('os').getpid()))"
        return (exec, (code,))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    Client(home=tmp_path / "home").close()
    started = start_server(tmp_path / "home", {"FINALMILE_UPLOAD_TIMEOUT_S": "20"})
    yield started
    started.stop()


def test_a_pickle_runs_in_a_child_process_not_in_the_server(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "loaded-by.txt"
    response = httpx.post(
        f"{server.url}/api/v1/models/evil",
        files={"file": ("model.pkl", pickle.dumps(Spy(str(marker))))},
        timeout=60,
    )
    assert 400 <= response.status_code < 500, response.text  # not a model: refused with a message
    assert marker.exists() and int(marker.read_text()) not in (server.process.pid, os.getpid())
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200


@pytest.mark.parametrize(
    ("code", "words"),
    [
        ("import os\nos._exit(3)\n", "died (exit code 3)"),
        ("while True:\n    pass\n", "longer than 20 s"),
        ("raise RuntimeError('boom at import')\n", "boom at import"),
    ],
)
def test_a_python_model_that_crashes_hangs_or_raises_leaves_the_server_serving(
    server: Server, code: str, words: str
) -> None:
    source = textwrap.dedent(code) + "\nclass Model:\n    def predict(self, frame):\n        return frame\n"
    response = httpx.post(
        f"{server.url}/api/v1/models/hostile", files={"file": ("model.py", source.encode())}, timeout=90
    )
    assert response.status_code == 422, response.text
    assert words in response.json()["error"] and "/tmp" not in response.text
    assert httpx.get(f"{server.url}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.url}/api/v1/models/hostile").status_code == 404  # nothing registered


def test_a_good_upload_is_registered_by_the_child(server: Server, tmp_path: Path) -> None:
    source = "class Doubler:\n    def predict(self, frame):\n        return frame['x'] * 2\n"
    sample = tmp_path / "sample.parquet"
    import pandas as pd

    pd.DataFrame({"x": [1.0, 2.0]}).to_parquet(sample)
    response = httpx.post(
        f"{server.url}/api/v1/models/doubler",
        files={"file": ("doubler.py", source.encode()), "sample": ("sample.parquet", sample.read_bytes())},
        timeout=90,
    )
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 1 and response.json()["framework"] == "python"
    audit = httpx.get(f"{server.url}/api/v1/audit").json()
    assert [(e["action"], e["after"]) for e in audit] == [("upload", "doubler:1")]
