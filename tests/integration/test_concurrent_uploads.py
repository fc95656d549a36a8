"""Concurrent uploads of one name from several threads and several processes get distinct versions."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from finalmile import Client
from tests.fixtures import SumModel

ROOT = Path(__file__).parents[2]


def test_threads_uploading_one_name(client: Client) -> None:
    with ThreadPoolExecutor(max_workers=4) as pool:
        versions = list(pool.map(lambda _: client.upload_model("shared", SumModel).version, range(8)))
    assert sorted(versions) == list(range(1, 9))
    assert [v.version for v in client.model_versions("shared")] == list(range(1, 9))


def test_processes_migrating_and_uploading_one_fresh_store(tmp_path: Path, database_url: str) -> None:
    script = (
        "import sys; from finalmile import Client; from tests.fixtures import SumModel\n"
        "with Client(home=sys.argv[1], database_url=sys.argv[2]) as c:\n"
        "    print(c.upload_model('shared', SumModel).version)\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path / "home"), database_url],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert sorted(int(out.strip()) for out, _ in outputs) == [1, 2, 3]
