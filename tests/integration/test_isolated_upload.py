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

from finalmile import Client, sandbox
from tests.integration.conftest import Server, start_server


class Spy:
    """A pickled object that, when loaded, tries to write into the server's home and says who loaded it and what it
    saw (what a hostile pickle does)."""

    def __init__(self, path: str, home: str) -> None:
        self.path = path
        self.home = home

    def __reduce__(self):  # type: ignore[no-untyped-def]
        code = (
            f"import os\nP, H = {self.path!r}, {self.home!r}\n"
            "seen = sorted(os.listdir(H)) if os.path.isdir(H) else None\n"
            "try:\n    open(P, 'w').write('written')\nexcept OSError:\n    pass\n"
            "raise RuntimeError('pid %d uid %d home %s secret %s' % (os.getpid(), os.getuid(), seen, "
            "'FINALMILE_SECRET_KEY' in os.environ))"
        )
        return (exec, (code,))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    Client(home=tmp_path / "home").close()
    started = start_server(tmp_path / "home", {"FINALMILE_UPLOAD_TIMEOUT_S": "20"})
    yield started
    started.stop()


def test_a_pickle_runs_in_a_child_process_not_in_the_server(server: Server, tmp_path: Path) -> None:
    marker = tmp_path / "home" / "loaded-by.txt"
    response = httpx.post(
        f"{server.url}/api/v1/models/evil",
        files={"file": ("model.pkl", pickle.dumps(Spy(str(marker), str(tmp_path / "home"))))},
        timeout=60,
    )
    assert 400 <= response.status_code < 500, response.text  # not a model: refused with a message
    said = response.json()["error"]
    pid = int(said.split("pid ")[1].split()[0])
    assert pid not in (server.process.pid, os.getpid()), said
    assert not marker.exists()  # the server's home is out of its reach
    if sandbox.mode("auto") == "bwrap":
        # the home shows only the folders down to its own scratch folder: no database, no logs, no workspace
        assert "uid 65534 home ['artifacts'] secret False" in said, said
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
