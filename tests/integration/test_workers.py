"""`finalmile serve --workers 2`: separate processes converge on the deployments recorded in the store."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular


def test_every_worker_serves_the_newly_deployed_version(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(100)
    with Client(home=tmp_path / "home") as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
        client.upload_model("m", LogisticRegression(C=0.01).fit(X, y), sample=X.head(10))
        client.build_pipeline("p").add_model_step("m:1").deploy()
    server = server_factory(tmp_path / "home", args=("--workers", "2"))
    body = X.head(1).to_json(orient="records")

    def versions(n: int) -> set[str]:
        seen = set()
        for _ in range(n):  # fresh connections, so both processes answer
            response = httpx.post(f"{server.url}/pipelines/p/infer", content=body)
            assert response.status_code == 200, response.text
            seen.add(response.headers["finalmile-pipeline-version"])
        return seen

    assert versions(10) == {"1"}
    created = httpx.post(f"{server.url}/api/v1/pipelines", json={"name": "p", "steps": [{"model": "m:2"}]}).json()
    assert (
        httpx.post(f"{server.url}/api/v1/pipelines/p/deploy", json={"version": created["version"]}).status_code == 200
    )
    time.sleep(2.5)  # each worker reads the store every second
    assert versions(20) == {"2"}
