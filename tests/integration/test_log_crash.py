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


def test_a_corrupt_journal_and_a_corrupt_part_are_kept_aside_told_and_never_fail_a_query(  # type: ignore[no-untyped-def]
    tmp_path: Path, server_factory
) -> None:
    """300 acknowledged strict requests, 64 bytes overwritten in the middle of the journal after a SIGKILL: the
    restart kept 148 and deleted the journal. A corrupt Parquet part made every `SELECT *` a 400 naming its path."""
    home = tmp_path / "home"
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        client.build_pipeline("strict").add_model_step("m:1").deploy(durability="strict")
        client.build_pipeline("other").add_model_step("m:1").deploy()
        client.pipeline("other").infer(X.head(5))
    with Client(home=home) as client:  # each client compacts its journal as it closes: two log parts of `other`
        client.services.sync()
        client.pipeline("other").infer(X.head(7))
    server = server_factory(home)
    body = X.head(1).to_json(orient="records")
    with httpx.Client(base_url=server.url, timeout=5) as http:
        acknowledged = [http.post("/pipelines/strict/infer", content=body) for _ in range(300)]
    assert all(r.status_code == 200 for r in acknowledged)
    os.kill(server.process.pid, signal.SIGKILL)
    server.process.wait()
    (journal,) = list((home / "logs" / "_journal").glob("strict--*.arrows"))
    data = bytearray(journal.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\x5a" * 64
    journal.write_bytes(bytes(data))
    parts = sorted((home / "logs" / "pipeline=other").rglob("*.parquet"), key=lambda p: p.stat().st_mtime)
    assert len(parts) == 2
    part = parts[0]
    part.write_bytes(part.read_bytes()[:-100])  # its footer gone

    server = server_factory(home)
    with httpx.Client(base_url=server.url, timeout=30) as http:
        answer = http.post("/api/v1/query", json={"sql": "SELECT pipeline, count(*) AS n FROM logs GROUP BY 1"})
        assert answer.status_code == 200, answer.text
        counts = {row["pipeline"]: row["n"] for row in answer.json()}
        assert 296 <= counts["strict"] < 300 and counts["other"] == 7, counts  # the rest of `other` still answers
        every = http.post("/api/v1/query", json={"sql": "SELECT * FROM logs WHERE pipeline = 'other'"})
        assert every.status_code == 200 and str(home) not in every.text
        health = http.get("/api/v1/health/logs").json()
        assert health["healthy"] is False and len(health["set_aside"]) == 2 and str(home) not in str(health)
        metrics = http.get("/metrics").text
        assert "finalmile_log_files_set_aside 2.0" in metrics
        audit = http.get("/api/v1/audit").json()
        assert sum(1 for e in audit if e["action"] == "log corrupt") == 2
        alerts = http.get("/api/v1/alerts").json()  # an alert names each, as the dashboard and the CLI show them
        named = sorted(a["evidence"]["set_aside"] for a in alerts if a["monitor"] == "inference log")
        assert named == sorted(f"_corrupt/{name}" for name in health["set_aside"]), alerts
    server.stop()
    assert len(list((home / "logs" / "_corrupt").iterdir())) == 2  # kept for a person, never deleted
