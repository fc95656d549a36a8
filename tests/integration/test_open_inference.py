"""The Open Inference Protocol's own REST document, run against a live server with schemathesis: every answer's
status is one the document lists for its operation (a bad inference request is its 400, not 422) and every body
matches the document's schema; a valid inference's answer is checked against the document's schema as well.
The gRPC side of the protocol is tested with tritonclient.grpc in test_grpc.py."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import numpy as np
import yaml
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from tests.fixtures import tabular

DOCUMENT = Path(__file__).parent / "protocol" / "open_inference_rest.yaml"


def _schema(document: dict[str, Any], name: str) -> dict[str, Any]:
    """One of the document's schemas, its references resolvable."""
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def test_the_protocols_rest_document_holds_against_a_live_server(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(100)
    with Client(home=tmp_path / "home") as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy()
        _, token = client.services.init_access()
    server = server_factory(tmp_path / "home", auth=True)
    auth = {"authorization": f"Bearer {token}"}

    document = yaml.safe_load(DOCUMENT.read_text())
    body = {"id": "one", "inputs": [{"name": c, "shape": [2], "datatype": "FP64", "data": X[c].head(2).tolist()}
                                    for c in X.columns]}  # fmt: skip
    answer = httpx.post(f"{server.url}/v2/models/p/versions/1/infer", json=body, headers=auth)
    assert answer.status_code == 200, answer.text
    jsonschema.validate(answer.json(), _schema(document, "inference_response"))
    assert answer.json()["id"] == "one" and np.isfinite(answer.json()["outputs"][0]["data"]).all()
    for bad in ({"inputs": []}, {"inputs": [{"name": "x0", "shape": [1], "datatype": "FP64", "data": ["a"]}]}):
        refused = httpx.post(f"{server.url}/v2/models/p/versions/1/infer", json=bad, headers=auth)
        assert refused.status_code == 400, refused.text
        jsonschema.validate(refused.json(), _schema(document, "inference_error_response"))

    (tmp_path / "schemathesis.toml").write_text('[parameters]\n"path.MODEL_NAME" = "p"\n"path.MODEL_VERSION" = "1"\n')
    cli = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    assert cli is not None
    result = subprocess.run(
        [cli, "run", str(DOCUMENT), "--url", server.url, "--max-examples", "40", "--generation-deterministic",
         "--checks", "not_a_server_error,status_code_conformance,response_schema_conformance",
         "--header", f"Authorization: Bearer {token}"],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:]
    assert "failed" not in result.stdout.split("Test cases:")[-1], result.stdout[-4000:]
