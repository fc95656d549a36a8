"""Rollouts run by real `finalmile serve` processes on one store (SQLite and PostgreSQL): with two servers each
step is judged once, and a server killed with SIGKILL mid-rollout is replaced by one that resumes where it was."""

from __future__ import annotations

import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client
from tests.fixtures import tabular

X, y = tabular(2000)
GATES = ["error_rate", "score_psi"]
"""Not p99 latency here: two servers on a CI machine time one-millisecond requests with pauses of several in either
arm (the unit tests gate a candidate 40 ms slower)."""


def _prepare(home: Path, database_url: str) -> None:
    with Client(home=home, database_url=database_url) as client:
        client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y), sample=X.head(50))
        client.upload_model("m", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y))
        client.build_pipeline("p").add_model_step("m:1").deploy()


class Traffic:
    """Requests of 10 rows to each live server in turn, from a thread, until stopped."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._send, daemon=True)
        self.thread.start()

    def _send(self) -> None:
        i = 0
        while not self.stopped.is_set():
            url = self.urls[i % len(self.urls)]
            at = (i * 10) % 1990
            try:
                httpx.post(f"{url}/pipelines/p/infer", content=X.iloc[at : at + 10].to_json(orient="records"),
                           headers={"content-type": "application/json"}, timeout=5)  # fmt: skip
            except httpx.HTTPError:
                time.sleep(0.05)  # a server being killed or started
            i += 1

    def stop(self) -> None:
        self.stopped.set()
        self.thread.join()


def _wait(client: Client, rollout_id: int, done, timeout: float = 90):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        record = client.rollout_run(rollout_id)
        if done(record):
            return record
        time.sleep(0.3)
    raise AssertionError(f"rollout did not get there in {timeout:g} s: {record}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_two_servers_judge_each_step_once_and_promote(tmp_path: Path, database_url: str, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    _prepare(home, database_url)
    env = {"FINALMILE_DATABASE_URL": database_url}
    servers = [server_factory(home, env), server_factory(home, env)]
    traffic = Traffic([s.url for s in servers])
    try:
        with Client(home=home, database_url=database_url) as client:
            started = client.rollout("p", "m:2", steps=[25, 50, 100], step_every="3s", min_rows=300, on_hold="wait",
                                    gates=GATES)  # fmt: skip
            done = _wait(client, started.id, lambda r: r.state != "running" and r.settled)  # deployed, aliases moved
    finally:
        traffic.stop()
    assert done.state == "promoted", done.reason
    judged = [(e.step, e.attempt) for e in done.events if e.attempt is not None]
    assert [c for c in Counter(judged).values() if c > 1] == []  # no evaluation recorded twice
    assert [e.decision for e in done.events if e.decision != "hold"] == ["start", "advance", "advance", "promote"]
    with Client(home=home, database_url=database_url) as client:
        assert client.model("m@champion").version == 2
        deployed = next(d for d in client.deployments() if d["name"] == "p")
        spec = next(v.spec for v in client.pipeline_versions("p") if v.version == deployed["version"])
    assert spec["steps"] == [{"kind": "model", "model": "m:2"}]


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_a_server_killed_mid_rollout_is_replaced_by_one_that_resumes(
    tmp_path: Path, database_url: str, server_factory
) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    _prepare(home, database_url)
    env = {"FINALMILE_DATABASE_URL": database_url}
    first = server_factory(home, env)
    urls = [first.url]
    traffic = Traffic(urls)
    try:
        with Client(home=home, database_url=database_url) as client:
            started = client.rollout("p", "m:2", steps=[25, 50, 100], step_every="3s", min_rows=300, on_hold="wait",
                                    gates=GATES)  # fmt: skip
            at_step = _wait(client, started.id, lambda r: r.step >= 1 or r.state != "running")
            assert at_step.state == "running", at_step.reason
            first.process.send_signal(signal.SIGKILL)
            first.process.wait()
            second = server_factory(home, env)
            urls[0] = second.url
            done = _wait(client, started.id, lambda r: r.state != "running" and r.settled)
    finally:
        traffic.stop()
    assert done.state == "promoted", done.reason
    steps = [e.step for e in done.events if e.decision in ("advance", "promote")]
    assert steps == [0, 1, 2]  # it went on from the step it was at, never back to the first
