"""An edge site and its central server as two processes on loopback: the edge serves its bundle offline, its rows
reach the central log once the server is up (exactly once, a SIGKILL of the edge included), a new version comes
down and is swapped in without a failed request, a version that fails at the edge keeps the old one serving and is
reported home, and a wrong token or a tampered bundle is refused with a message that says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import QueryError
from tests.fixtures import tabular
from tests.integration.conftest import ROOT, free_port

X, y = tabular(300)
FINALMILE = str(Path(sys.executable).parent / "finalmile")
_FAILS_AT_THE_EDGE = '''
class Scorer:
    """Runs at the central server; refuses to run from a bundle's store (its files lie under `edgebundle`)."""

    def predict(self, frame):
        if "edgebundle" in __file__:
            raise RuntimeError("this model cannot run at the edge")
        return frame[["x0"]].rename(columns={"x0": "score"})
'''


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FINALMILE_")}
    return environment | {"PYTHONPATH": str(ROOT), "FINALMILE": FINALMILE, "FINALMILE_LOG_COMPACT_S": "0.5",
                          "FINALMILE_EDGE_SYNC_S": "0.3"} | extra  # fmt: skip


def _bundle(central: Path, output: Path) -> subprocess.CompletedProcess[str]:
    env = _environment(FINALMILE_HOME=str(central))
    return subprocess.run(
        [FINALMILE, "bundle", "p", "--output", str(output), "--no-wheels"], env=env, capture_output=True, text=True
    )


class Edge:
    """`serve.sh` of a bundle, as a site runs it."""

    def __init__(self, bundle: Path, upstream: str, token: str, site: str = "store-1") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = bundle / f"edge-{self.port}.log"
        args = ["--port", str(self.port), "--upstream", upstream, "--token", token, "--site", site, "--no-auth"]
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [str(bundle / "serve.sh"), *args], env=_environment(), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/v2/models/p/ready", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the edge did not start: {self.log.read_text()}")

    def infer(self, rows: int, at: int = 0) -> httpx.Response:
        body = X.iloc[at : at + rows].to_json(orient="records")
        headers = {"content-type": "application/json"}
        return httpx.post(f"{self.url}/pipelines/p/infer", content=body, headers=headers, timeout=30)

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)


def _central_rows(url: str, token: str, want: int, timeout: float = 60) -> int:
    with Client(url=url, token=token) as remote:
        deadline, rows = time.monotonic() + timeout, -1
        while time.monotonic() < deadline:
            try:
                rows = int(remote.query("SELECT count(*) AS n FROM logs WHERE site = 'store-1'").n[0])
            except QueryError:  # no edge part yet: the log has no `site` column
                rows = 0
            if rows >= want:
                time.sleep(1.0)  # any more would be a duplicate: give it the time to arrive
                return int(remote.query("SELECT count(*) AS n FROM logs WHERE site = 'store-1'").n[0])
            time.sleep(0.3)
        return rows


def test_an_edge_serves_offline_ships_its_rows_home_once_and_takes_new_versions(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    central = tmp_path / "central"
    first = LogisticRegression().fit(X, y)
    with Client(home=central) as client:
        client.upload_model("m", first, sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy(durability="strict")
        _, owner = client.services.init_access("olga")
        client.services.set_member("store-1-bot", "default", "editor")
        _, site_token = client.services.create_token("store-1-bot", "default", "editor", "store 1")
        client.services.set_member("victor", "default", "viewer")
        _, viewer = client.services.create_token("victor", "default", "viewer", "reader")
    bundle = tmp_path / "edgebundle"
    made = _bundle(central, bundle)
    assert made.returncode == 0, made.stderr
    assert {p.name for p in bundle.iterdir()} >= {"bundle.json", "artifacts", "install.sh", "serve.sh", "Dockerfile"}

    # offline: the central server is not up yet; the edge serves and logs locally all the same
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    edge = Edge(bundle, upstream, site_token)
    try:
        answers = [edge.infer(2, at=2 * i) for i in range(30)]
        assert all(a.status_code == 200 for a in answers)
        expected = first.predict_proba(X.head(2))[:, 1]
        np.testing.assert_allclose([r["score"] for r in answers[0].json()], expected, rtol=1e-5)
        time.sleep(1.5)  # parts sealed locally while the link is down

        server = server_factory(central, auth=True, port=port)  # the link comes up
        assert _central_rows(server.url, owner, 60) == 60

        # SIGKILL right after more traffic (rows on disk, strict durability); a restart ships them, once each
        for i in range(20):
            assert edge.infer(1, at=100 + i).status_code == 200
        edge.kill()
        edge = Edge(bundle, upstream, site_token)
        assert _central_rows(server.url, owner, 80) == 80
        with Client(url=server.url, token=owner) as remote:
            sites = remote.query("SELECT site, pipeline_version, count(*) AS n FROM logs GROUP BY ALL")
            assert sites.to_dict("records") == [{"site": "store-1", "pipeline_version": 1, "n": 80}]
            with httpx.Client(base_url=server.url) as browser:  # the dashboard's pipeline page names the site
                browser.post("/ui/login", data={"token": owner, "next": "/ui"})
                page = browser.get("/ui/pipelines/p").text
                assert "Sites, last 24 h" in page and "store-1" in page

            # a new version comes down and is swapped in while requests keep coming: none fails
            second = LogisticRegression(C=0.01).fit(X.iloc[:150], y.iloc[:150])
            remote.upload_model("m", second)
            statuses: list[int] = []
            stop = threading.Event()

            def traffic() -> None:
                while not stop.is_set():
                    statuses.append(edge.infer(1).status_code)

            thread = threading.Thread(target=traffic)
            thread.start()
            remote.build_pipeline("p").add_model_step("m:2").deploy(durability="strict")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and edge.infer(1).headers["finalmile-pipeline-version"] != "2":
                time.sleep(0.2)
            stop.set()
            thread.join()
            assert edge.infer(1).headers["finalmile-pipeline-version"] == "2" and set(statuses) == {200}
            np.testing.assert_allclose(edge.infer(1).json()[0]["score"], second.predict_proba(X.head(1))[0, 1],
                                       rtol=1e-5)  # fmt: skip

            # a version that fails at the edge: the old one keeps serving, and the reason goes home
            code = tmp_path / "scorer.py"
            code.write_text(_FAILS_AT_THE_EDGE)
            remote.upload_model("bad", code, sample=X.head(5))
            remote.build_pipeline("p").add_model_step("bad:1").deploy()
            deadline, reported = time.monotonic() + 60, None
            while time.monotonic() < deadline and reported is None:
                trail = remote.audit("site store-1")
                reported = next((e for e in trail.to_dict("records") if e["action"] == "edge failed"), None)
                time.sleep(0.3)
            assert reported is not None and "cannot run at the edge" in str(reported["after"])
            assert edge.infer(1).headers["finalmile-pipeline-version"] == "2"

        # a viewer's token may not push rows; a wrong one is refused and the edge says so in its log
        part = next((bundle / "home" / "logs").glob("pipeline=*/date=*/part-*.parquet"))
        params = {"site": "x", "pipeline": "p", "date": "2026-01-01", "sha256": "0" * 64}
        refused = httpx.post(f"{server.url}/edge/logs", params=params, content=part.read_bytes(),
                             headers={"authorization": f"Bearer {viewer}"})  # fmt: skip
        assert refused.status_code == 403
        edge.stop()
        wrong = Edge(bundle, upstream, "fm_wrong")
        wrong.infer(1)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and "upstream refused a log part (401)" not in wrong.log.read_text():
            time.sleep(0.3)
        wrong.stop()
        assert "upstream refused a log part (401)" in wrong.log.read_text()
    finally:
        edge.stop()


def test_a_tampered_bundle_is_refused_before_it_serves(tmp_path: Path) -> None:
    central = tmp_path / "central"
    with Client(home=central) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy()
    bundle = tmp_path / "b"
    assert _bundle(central, bundle).returncode == 0
    artifact = next(p for p in (bundle / "artifacts").rglob("*") if p.is_file())
    artifact.write_bytes(artifact.read_bytes()[:-1] + b"x")
    started = subprocess.run([str(bundle / "serve.sh"), "--port", str(free_port()), "--no-auth"], env=_environment(),
                             capture_output=True, text=True, timeout=60)  # fmt: skip
    assert started.returncode != 0 and "Traceback" not in started.stderr
    assert "tampered with" in started.stderr and str(bundle) in started.stderr
    again = _bundle(central, bundle)
    assert again.returncode != 0 and "not empty" in again.stderr + again.stdout


def test_a_bundle_installs_from_its_own_wheels_with_no_index_and_serves(tmp_path: Path) -> None:
    central = tmp_path / "central"
    model = LogisticRegression().fit(X, y)
    with Client(home=central) as client:
        client.upload_model("m", model, sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy()
    bundle = tmp_path / "b"
    made = subprocess.run([FINALMILE, "bundle", "p", "--output", str(bundle)], capture_output=True, text=True,
                          env=_environment(FINALMILE_HOME=str(central)))  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert any(p.name.startswith("finalmile-") for p in (bundle / "wheels").iterdir())
    environment = {k: v for k, v in _environment().items() if not k.startswith("PIP_") and k != "FINALMILE"}
    installed = subprocess.run([str(bundle / "install.sh")], env=environment, capture_output=True, text=True)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert (bundle / ".venv" / "bin" / "finalmile").is_file()
    environment.pop("PYTHONPATH")  # the bundle's own environment, not this checkout
    port = free_port()
    edge = subprocess.Popen([str(bundle / "serve.sh"), "--port", str(port), "--no-auth"], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline, answer = time.monotonic() + 60, None
        while time.monotonic() < deadline and answer is None:
            try:
                answer = httpx.post(f"http://127.0.0.1:{port}/pipelines/p/infer", content=X.head(1).to_json(
                    orient="records"), headers={"content-type": "application/json"})  # fmt: skip
            except httpx.TransportError:
                time.sleep(0.3)
        assert answer is not None and answer.status_code == 200
        np.testing.assert_allclose(answer.json()[0]["score"], model.predict_proba(X.head(1))[0, 1], rtol=1e-5)
    finally:
        os.killpg(edge.pid, signal.SIGTERM)
        edge.wait(timeout=30)


def test_a_bundle_asked_of_a_fresh_server_for_an_unknown_pipeline_names_it(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    """The remote client streams the bundle to disk; an error answer is still the server's error, named (a fresh
    home, with no artifact store folders yet, answered a 500), and nothing is written where the bundle would go."""
    from finalmile.errors import PipelineNotFound

    (tmp_path / "fresh").mkdir()
    server = server_factory(tmp_path / "fresh")
    with Client(url=server.url) as remote:
        try:
            remote.bundle_pipeline("nope", tmp_path / "out", wheels=False)
        except PipelineNotFound as exc:
            assert "pipeline 'nope' not found" in str(exc)
        else:
            raise AssertionError("a bundle of an unknown pipeline was written")
    assert not (tmp_path / "out").exists()
