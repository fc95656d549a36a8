"""The HTTP surface on a real server: a standard V2 client, records and Arrow, bad input, metrics, hot swap."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pytest
import tritonclient.http as triton
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec
from tests.fixtures import ErrorModel, tabular
from tests.integration.conftest import Server, start_server

X, y = tabular(300)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Client]]:
    home = tmp_path_factory.mktemp("served")
    client = Client(home=home)
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
    client.upload_model("m", LogisticRegression(C=0.001).fit(X, y), sample=X.head(20))
    client.upload_model("broken", ErrorModel)
    client.build_pipeline("p").add_model_step("m@champion").add_check("high", "out.score > 0.9").deploy()
    client.build_pipeline("fails").add_model_step("broken").deploy()
    client.build_pipeline("idle").add_model_step("m:1").create_version()
    server = start_server(home, {"FINALMILE_MAX_BODY_BYTES": str(1024 * 1024)})
    yield server, client
    server.stop()
    client.close()


def test_a_standard_v2_client_works_unchanged(served: tuple[Server, Client]) -> None:
    server, client = served
    triton_client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert triton_client.is_server_live() and triton_client.is_server_ready()
    assert triton_client.is_model_ready("p")
    metadata = triton_client.get_model_metadata("p")
    assert [i["name"] for i in metadata["inputs"]] == list(X.columns)
    expected = client.model("m:1").predict(X.head(5))
    for binary in (False, True):
        inputs = [triton.InferInput(c, [5], "FP64") for c in X.columns]
        for tensor, column in zip(inputs, X.columns, strict=True):
            tensor.set_data_from_numpy(X[column].head(5).to_numpy(), binary_data=binary)
        outputs = [triton.InferRequestedOutput(n, binary_data=binary) for n in ("label", "probabilities", "score")]
        result = triton_client.infer("p", inputs, outputs=outputs)
        np.testing.assert_array_equal(result.as_numpy("label"), expected.label)
        np.testing.assert_allclose(result.as_numpy("score"), expected.score)
        assert result.as_numpy("probabilities").shape == (5, 2)
        params = result.get_response()["parameters"]
        assert params["pipeline_version"] == 1 and params["model_versions"] == [["m:1"]] * 5
    # One [n, 6] tensor, as generic V2 clients send tabular rows, is spread over the named columns.
    one = triton.InferInput("input-0", [5, X.shape[1]], "FP64")
    one.set_data_from_numpy(X.head(5).to_numpy(), binary_data=True)
    result = triton_client.infer("p", [one], model_version="1")
    np.testing.assert_allclose(result.as_numpy("score"), expected.score)


def test_records_and_arrow_answer_like_predict(served: tuple[Server, Client]) -> None:
    server, client = served
    expected = client.model("m:1").predict(X.head(8))
    response = httpx.post(
        f"{server.url}/pipelines/p/infer",
        content=X.head(8).to_json(orient="records"),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 200, response.text
    got = pd.DataFrame(response.json())
    np.testing.assert_allclose(got.score, expected.score)
    assert response.headers["finalmile-pipeline-version"] == "1"
    assert response.headers["finalmile-model-versions"] == "m:1"
    body = arrow_codec.encode(pa.Table.from_pandas(X.head(8), preserve_index=False))
    response = httpx.post(f"{server.url}/pipelines/p/infer", content=body, headers={"content-type": ARROW_STREAM})
    assert response.status_code == 200 and response.headers["content-type"] == ARROW_STREAM
    table = arrow_codec.decode(response.content)
    np.testing.assert_allclose(table.column("score").to_numpy(), expected.score)


def v2_body(frame: pd.DataFrame) -> bytes:
    return orjson.dumps(
        {
            "inputs": [
                {"name": c, "shape": [len(frame)], "datatype": "FP64", "data": frame[c].tolist()} for c in frame.columns
            ]
        }
    )


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/p/infer", b"{oops", 400, "invalid JSON"),
        (
            "/v2/models/p/infer",
            b'{"inputs": [{"name": "x0", "shape": [2], "datatype": "FP64", "data": [1]}]}',
            400,
            "needs 2 values",
        ),
        (
            "/v2/models/p/infer",
            b'{"inputs": [{"name": "x0", "shape": [1], "datatype": "COMPLEX", "data": [1]}]}',
            400,
            "unknown datatype",
        ),
        ("/v2/models/p/infer", v2_body(X.head(1).drop(columns=["x3"])), 400, "column 'x3': missing"),
        ("/v2/models/p/infer", v2_body(X.head(1).assign(bonus=1.0)), 400, "column 'bonus': unexpected input"),
        (
            "/v2/models/p/infer",
            b'{"inputs": [{"name": "x0", "shape": [0], "datatype": "FP64", "data": []}]}',
            400,
            "empty batch",
        ),
        ("/v2/models/nope/infer", v2_body(X.head(1)), 404, "pipeline 'nope' is not deployed"),
        ("/v2/models/p/versions/7/infer", v2_body(X.head(1)), 404, "version 7"),
        ("/v2/models/idle/infer", v2_body(X.head(1)), 503, "exists but is not deployed"),
        (
            "/v2/models/fails/infer",
            b'{"inputs": [{"name": "a", "shape": [1], "datatype": "FP64", "data": [1]}]}',
            400,
            "this model always fails",
        ),
        ("/pipelines/p/infer", b'{"not": "records"}', 422, "JSON list of records"),
        ("/pipelines/p/infer", b"x" * (2 * 1024 * 1024), 413, "exceeds the limit"),
    ],
)
def test_bad_input_is_a_4xx_with_a_json_body(
    served: tuple[Server, Client], path: str, body: bytes, status: int, message: str
) -> None:
    server, _ = served
    response = httpx.post(f"{server.url}{path}", content=body, headers={"content-type": "application/json"})
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert httpx.post(f"{server.url}/pipelines/p/infer", content=X.head(1).to_json(orient="records")).status_code == 200


def test_metadata_readiness_metrics_and_openapi(served: tuple[Server, Client]) -> None:
    server, _ = served
    assert httpx.get(f"{server.url}/v2").json()["extensions"] == ["binary_tensor_data"]
    assert httpx.get(f"{server.url}/v2/models/p/ready").status_code == 200
    assert httpx.get(f"{server.url}/v2/models/idle/ready").status_code == 503
    assert httpx.get(f"{server.url}/v2/models/nope/ready").status_code == 404
    metrics = httpx.get(f"{server.url}/metrics").text
    assert 'finalmile_requests_total{pipeline="p",protocol="records",status="200"}' in metrics
    assert "finalmile_batch_rows_bucket" in metrics and "finalmile_queue_seconds" in metrics
    assert 'finalmile_step_seconds_count{pipeline="p",step="m:1"}' in metrics
    assert 'finalmile_queue_seconds_count{pipeline="p"}' in metrics
    paths = httpx.get(f"{server.url}/openapi.json").json()["paths"]
    assert {"/v2/models/{name}/infer", "/pipelines/{name}/infer", "/api/v1/pipelines/{name}/deploy"} <= set(paths)


def test_hot_swap_under_load_drops_nothing(served: tuple[Server, Client]) -> None:
    server, client = served
    stop = threading.Event()
    statuses: list[int] = []
    versions: list[str] = []
    body = X.head(2).to_json(orient="records")

    def load() -> None:
        with httpx.Client(base_url=server.url) as http:
            while not stop.is_set():
                r = http.post("/pipelines/p/infer", content=body, headers={"content-type": "application/json"})
                statuses.append(r.status_code)
                versions.append(r.headers.get("finalmile-pipeline-version", "?"))

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)
    created = httpx.post(f"{server.url}/api/v1/pipelines", json={"name": "p", "steps": [{"model": "m:2"}]}).json()
    swapped = httpx.post(f"{server.url}/api/v1/pipelines/p/deploy", json={"version": created["version"]})
    assert swapped.status_code == 200, swapped.text
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join()
    assert statuses and set(statuses) == {200}
    assert versions[0] == "1" and versions[-1] == str(created["version"])
    client.services.pipelines.set_deployment("p", 1, {})  # leave the module's server as it was for other tests


def test_a_batch_of_concurrent_requests_is_coalesced(served: tuple[Server, Client]) -> None:
    server, _ = served
    body = X.head(1).to_json(orient="records")

    def hammer() -> None:
        with httpx.Client(base_url=server.url) as http:
            for _ in range(50):
                assert http.post("/pipelines/p/infer", content=body).status_code == 200

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    metrics = httpx.get(f"{server.url}/metrics").text
    count = sum_ = 0.0
    for line in metrics.splitlines():
        if line.startswith('finalmile_batch_requests_count{pipeline="p"}'):
            count = float(line.split()[-1])
        if line.startswith('finalmile_batch_requests_sum{pipeline="p"}'):
            sum_ = float(line.split()[-1])
    assert sum_ > count  # at least one batch held more than one request


def test_management_api_upload_deploy_infer(served: tuple[Server, Client], tmp_path: Path) -> None:
    server, _ = served
    import joblib

    joblib.dump(LogisticRegression().fit(X, y), tmp_path / "model.joblib")
    with (tmp_path / "model.joblib").open("rb") as f:
        uploaded = httpx.post(
            f"{server.url}/api/v1/models/remote",
            files={"file": ("model.joblib", f)},
            data={"alias": "champion"},
            timeout=60,  # loaded and checked in a child process, which imports scikit-learn afresh
        )
    assert uploaded.status_code == 200, uploaded.text
    assert uploaded.json()["runtime"] == "onnx"
    created = httpx.post(f"{server.url}/api/v1/pipelines", json={"name": "r", "steps": [{"model": "remote@champion"}]})
    assert created.json()["spec"]["steps"][0]["model"] == "remote:1"
    assert httpx.post(f"{server.url}/api/v1/pipelines/r/deploy", json={}).status_code == 200
    answer = httpx.post(f"{server.url}/pipelines/r/infer", content=X.head(2).to_json(orient="records"))
    assert answer.status_code == 200 and answer.headers["finalmile-model-versions"] == "remote:1"
    bad = httpx.post(f"{server.url}/api/v1/models/remote", files={"file": ("model.joblib", b"garbage")}, timeout=60)
    assert bad.status_code == 422 and "not a readable joblib" in bad.json()["error"]
    assert httpx.post(f"{server.url}/api/v1/pipelines/r/deploy", json={"workers": 0}).status_code == 422
