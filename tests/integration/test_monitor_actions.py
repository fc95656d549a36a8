"""The loop closed on a real server: traffic drifts, the scheduler's monitor alerts, a webhook on loopback receives
the alert, and the live deployment is rolled back."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular

X, y = tabular(300)


class _Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, object]] = []
    failures_left = 1  # the first POST gets a 503: the action must retry

    def do_POST(self) -> None:  # noqa: N802 (the standard library's name)
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if _Receiver.failures_left:
            _Receiver.failures_left -= 1
            self.send_response(503)
        else:
            _Receiver.received.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_a_real_alert_calls_the_webhook_and_rolls_the_live_deployment_back(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    receiver = HTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    hook = f"http://127.0.0.1:{receiver.server_address[1]}/alerts"
    home = tmp_path / "home"
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(50))
        client.upload_model("m", LogisticRegression(C=0.001).fit(X, y), sample=X.head(50))
        client.build_pipeline("p").add_model_step("m:1").deploy()
        client.build_pipeline("p").add_model_step("m:2").deploy()  # version 2: the one that will misbehave
    server = server_factory(home, env={"FINALMILE_MONITOR_POLL_S": "0.3"})
    started = datetime.now(UTC)
    body = {
        "name": "x0-drift",
        "pipeline": "p",
        "column": "in_x0",
        "baseline_values": X.x0.tolist(),
        "window": 2,
        "warning": 0.1,
        "alert": 0.25,
        "start": started.isoformat(),
        "actions": [{"kind": "webhook", "url": hook, "retries": 2}, {"kind": "rollback"}],
    }
    created = httpx.post(f"{server.url}/api/v1/assays", json=body, timeout=30)
    assert created.status_code == 201, created.text
    drifted = (X.head(40) + 3).to_dict(orient="records")
    for _ in range(5):
        response = httpx.post(f"{server.url}/pipelines/p/infer", json=drifted, timeout=30)
        assert response.status_code == 200 and response.headers["finalmile-pipeline-version"] == "2"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        deployments = httpx.get(f"{server.url}/api/v1/deployments", timeout=10).json()
        if deployments[0]["version"] == 1 and _Receiver.received:
            break
        time.sleep(0.3)
    assert deployments[0]["version"] == 1, deployments
    response = httpx.post(f"{server.url}/pipelines/p/infer", json=drifted[:1], timeout=30)
    assert response.headers["finalmile-pipeline-version"] == "1"  # the live deployment serves version 1 again
    alert = _Receiver.received[0]
    assert alert["monitor"] == "x0-drift" and alert["level"] == "alert" and float(alert["value"]) > 0.25  # type: ignore[arg-type]
    assert "baseline_shares" in alert["evidence"]  # type: ignore[operator]
    alerts = httpx.get(f"{server.url}/api/v1/alerts", timeout=10).json()
    outcomes = {a["action"]: a["outcome"] for a in alerts[0]["actions"]}
    assert outcomes == {"webhook": "done", "rollback": "done"}
    assert "after 2 attempt(s)" in next(a["detail"] for a in alerts[0]["actions"] if a["action"] == "webhook")
    seen = httpx.post(f"{server.url}/api/v1/alerts/{alerts[0]['alert_id']}/acknowledge", timeout=10).json()
    assert seen["acknowledged_by"] and seen["acknowledged_at"]
    again = httpx.post(f"{server.url}/api/v1/alerts/{alerts[0]['alert_id']}/acknowledge", timeout=10).json()
    assert again["acknowledged_at"] == seen["acknowledged_at"]  # the first acknowledgement stands
    missing = httpx.post(f"{server.url}/api/v1/alerts/999999/acknowledge", timeout=10)
    assert missing.status_code == 404 and "999999" in missing.json()["error"]
    results = httpx.get(f"{server.url}/api/v1/assays/x0-drift/results", timeout=10).json()
    assert any(r["status"] == "alert" for r in results)
    bad = httpx.post(f"{server.url}/api/v1/assays", json=body | {"name": "b", "warning": 0.5, "alert": 0.1}, timeout=30)
    assert bad.status_code == 422 and "warning threshold" in bad.json()["error"]
    assert started + timedelta(seconds=60) > datetime.now(UTC)
    receiver.shutdown()
    receiver.server_close()
