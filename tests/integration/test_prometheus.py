"""The shipped Prometheus rules and Grafana dashboard against real components: Debian's `prometheus` (installed by
.ci/run) scrapes a live `finalmile serve` with a viewer's token, `promtool` accepts the rules, and every query of
every panel of `deploy/grafana/finalmile.json` returns data."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest
import yaml
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular
from tests.integration.conftest import ROOT, free_port, require_broker
from tests.integration.test_streams import _publish

X, y = tabular(300)
DEPLOY = ROOT / "deploy"


def _prometheus() -> tuple[str, str]:
    found = shutil.which("prometheus"), shutil.which("promtool")
    if None in found:
        if os.environ.get("FINALMILE_REQUIRE_PROMETHEUS"):
            pytest.fail("FINALMILE_REQUIRE_PROMETHEUS is set but prometheus or promtool is not installed")
        pytest.skip("needs Debian's prometheus (.ci/run installs it: apt-get install prometheus)")
    return found  # type: ignore[return-value]


def test_promtool_accepts_the_rules_and_the_example_configuration() -> None:
    _, promtool = _prometheus()
    rules = subprocess.run([promtool, "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                           capture_output=True, text=True)  # fmt: skip
    assert rules.returncode == 0 and "SUCCESS: 6 rules found" in rules.stdout, rules.stdout + rules.stderr


def test_every_panel_of_the_dashboard_has_data_from_a_live_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    prometheus, promtool = _prometheus()
    require_broker("nats")
    home = tmp_path / "home"
    subject = f"fm.p{uuid.uuid4().hex[:10]}"
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
        client.upload_model("m", LogisticRegression(C=0.1).fit(X, y))
        client.build_pipeline("p").add_split({"a": (0.5, "m:1"), "b": (0.5, "m:2")}).deploy()
        client.build_pipeline("scoring").add_model_step("m:1").deploy()
        client.build_monitor("errors", "p", "error_rate", window="2s", alert=0.5).save()
        client.services.apply_stream({
            "name": "events", "pipeline": "scoring", "source": {"broker": "nats", "subject": f"{subject}.in"},
            "sink": {"broker": "nats", "subject": f"{subject}.out"},
        })  # fmt: skip
        _, owner = client.services.init_access("olga")
        client.services.set_member("grafana", "default", "viewer")
        _, viewer = client.services.create_token("grafana", "default", "viewer", "prometheus")
    asyncio.run(_publish("nats", f"{subject}.in", [json.dumps(r).encode() for r in X.head(30).to_dict("records")]))
    server = server_factory(home, auth=True, env={"FINALMILE_MONITOR_POLL_S": "1"})

    # the shipped example configuration, with this server and token filled in
    token = tmp_path / "finalmile.token"
    token.write_text(viewer)
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEPLOY / "prometheus" / "alerts.yml")]
    job = config["scrape_configs"][0]
    job["authorization"]["credentials_file"] = str(token)
    job["static_configs"] = [{"targets": [f"127.0.0.1:{server.port}"]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    checked = subprocess.run([promtool, "check", "config", str(tmp_path / "prometheus.yml")], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    port = free_port()
    with (tmp_path / "prometheus.log").open("wb") as log:
        scraper = subprocess.Popen(
            [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        headers = {"authorization": f"Bearer {owner}", "content-type": "application/json"}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # traffic, and a few requests the server refuses (422)
            for i in range(10):
                httpx.post(f"{server.url}/pipelines/p/infer", headers=headers,
                           content=X.iloc[[i]].to_json(orient="records"))  # fmt: skip
            httpx.post(f"{server.url}/pipelines/p/infer", headers=headers, content=b'[{"nope": 1}]')
            if _has_data(api, "finalmile_stream_lag") and _has_data(api, "finalmile_monitor_status") and \
                    _has_data(api, 'rate(finalmile_requests_total{status="422"}[15s])'):  # fmt: skip
                break
            time.sleep(0.5)
        assert _has_data(api, 'up{job="finalmile"} == 1'), (tmp_path / "prometheus.log").read_text()[-2000:]
        dashboard = json.loads((DEPLOY / "grafana" / "finalmile.json").read_text())
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                expr = target["expr"].replace("$__rate_interval", "15s").replace("$pipeline", ".*")
                if not _has_data(api, expr):
                    empty.append(f"{panel['title']}: {expr}")
        assert not empty, empty
    finally:
        scraper.terminate()
        scraper.wait(timeout=30)


def _has_data(api: str, expr: str) -> bool:
    answer = httpx.get(f"{api}/query", params={"query": expr}).json()
    assert answer["status"] == "success", (expr, answer)
    return bool(answer["data"]["result"])
