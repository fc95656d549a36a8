"""Crash safety: `kill -9` a server under load, restart, and find every acknowledged request in the logs."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import httpx
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular

X, y = tabular(100)


def test_acknowledged_requests_survive_kill_9(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        client.build_pipeline("strict").add_model_step("m:1").deploy(durability="strict")
        client.build_pipeline("fast").add_model_step("m:1").deploy(durability="fast")
    server = server_factory(home)
    acknowledged: dict[str, list[tuple[str, float]]] = {"strict": [], "fast": []}
    stop = threading.Event()
    body = X.head(2).to_json(orient="records")

    def load(pipeline: str) -> None:
        with httpx.Client(base_url=server.url, timeout=5) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"/pipelines/{pipeline}/infer", content=body)
                except httpx.TransportError:
                    return  # the server is gone
                if r.status_code == 200:
                    acknowledged[pipeline].append((r.headers["finalmile-request-id"], time.monotonic()))

    threads = [threading.Thread(target=load, args=(p,)) for p in ("strict", "fast", "strict", "fast")]
    for t in threads:
        t.start()
    time.sleep(3.0)
    killed_at = time.monotonic()
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    stop.set()
    for t in threads:
        t.join()
    assert len(acknowledged["strict"]) > 50 and len(acknowledged["fast"]) > 50

    with Client(home=home) as restarted:  # start-up compacts what the dead server left in its journals
        logged = set(restarted.query("SELECT DISTINCT request_id FROM logs WHERE pipeline = 'strict'").request_id)
        missing_strict = [rid for rid, _ in acknowledged["strict"] if rid not in logged]
        assert missing_strict == []
        logged_fast = set(restarted.query("SELECT DISTINCT request_id FROM logs WHERE pipeline = 'fast'").request_id)
        # `fast` may lose at most the last flush interval (1 s), never anything older.
        old_missing = [rid for rid, at in acknowledged["fast"] if rid not in logged_fast and at < killed_at - 1.5]
        assert old_missing == []
        rows = restarted.query("SELECT count(*) AS n FROM logs WHERE pipeline = 'strict'").n[0]
        assert rows >= 2 * len(acknowledged["strict"])
