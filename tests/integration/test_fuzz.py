"""Schemathesis fuzzes the HTTP API from the server's own OpenAPI document: no input may produce a 5xx, and every
answer matches the schema the document gives for its status (422 bodies included). Path names and ids are drawn
from what the store holds most of the time, so the requests reach past the 404 into each route's own logic."""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular


def test_no_generated_request_gets_a_server_error(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(100)
    with Client(home=tmp_path / "home") as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
        client.build_pipeline("p").add_model_step("m@champion").deploy()
        client.build_assay("a", "p", f"in_{X.columns[0]}", baseline=X, window="5m", metric="psi", alert=0.25).save(
            start=datetime.now(UTC) - timedelta(minutes=10)
        )
        (tmp_path / "job.py").write_text("def main(ctx):\n    ctx.log('ran')\n")
        client.upload_job("nightly", str(tmp_path / "job.py"))
        client.run_job("nightly")
        _, token = client.services.init_access()
    (tmp_path / "schemathesis.toml").write_text(
        """
[dictionaries.names]
values = ["p", "m", "a", "nightly", "m@champion", "m:1"]
[dictionaries.ids]
values = [1, 2]
[parameters]
"path.name" = { dictionary = "names", probability = 0.7 }
"path.ref" = { dictionary = "names", probability = 0.7 }
"path.version" = { dictionary = "ids", probability = 0.5 }
"path.run_id" = { dictionary = "ids", probability = 0.5 }
"path.alert_id" = { dictionary = "ids", probability = 0.5 }
"""
    )
    server = server_factory(tmp_path / "home", auth=True)
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None
    result = subprocess.run(
        [
            cli,
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance",
            "--max-examples",
            "25",
            "--generation-deterministic",
            "--header",
            f"Authorization: Bearer {token}",  # an owner: every route is reachable
            "--exclude-path-regex",
            # revoking its own token would leave the rest of the run at 401; a bundle runs pip for its wheels (tens
            # of seconds: tests/integration/test_edge.py bundles with wheels and installs from them)
            "undeploy|tokens/|/bundle",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    failure = result.stdout.find("Server error")  # the first one names the operation and the request's curl
    assert result.returncode == 0, result.stdout[max(0, failure - 200) :][:4000] if failure >= 0 else result.stdout
    summary = result.stdout[-3000:]
    assert " passed" in summary and "failed" not in summary.split("Test cases:")[-1]
    assert httpx_get(f"{server.url}/v2/health/live") == 200  # still serving


def httpx_get(url: str) -> int:
    import httpx

    return httpx.get(url).status_code
