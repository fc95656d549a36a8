"""The Open Inference Protocol over gRPC, from a real `finalmile serve --grpc-port` driven by `tritonclient.grpc`
unchanged: the same tokens, permissions, answers, log rows and metrics as HTTP, and bad input as gRPC statuses that
name the problem."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from sklearn.linear_model import LogisticRegression
from tritonclient.utils import InferenceServerException

from finalmile import Client
from tests.fixtures import tabular
from tests.integration.conftest import free_port

X, y = tabular(200)


def _inputs(rows: int, columns: list[str], start: int = 0) -> list[triton.InferInput]:
    inputs = [triton.InferInput(c, [rows], "FP64") for c in columns]
    for tensor, column in zip(inputs, columns, strict=True):
        tensor.set_data_from_numpy(X[column].iloc[start : start + rows].to_numpy())
    return inputs


def client_scores(home: Path, rows: object) -> list[float]:
    with Client(home=home) as client:
        return [float(v) for v in client.model("m:1").predict(rows)["score"]]


def _refused(call, *args, **kwargs) -> InferenceServerException:  # type: ignore[no-untyped-def]
    with pytest.raises(InferenceServerException) as refused:
        call(*args, **kwargs)
    return refused.value


def test_tritonclient_grpc_infers_with_tokens_and_is_logged_like_http(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with Client(home=home) as client:
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
        client.build_pipeline("p").add_model_step("m:1").deploy()
        expected = client.model("m:1").predict(X.head(5))
        _, owner = client.services.init_access("alice")
        client.services.set_member("victor", "default", "viewer")
        _, viewer = client.services.create_token("victor", "default", "viewer", "reader")
    port = free_port()
    server = server_factory(home, args=("--grpc-port", str(port)), auth=True)
    grpc = triton.InferenceServerClient(url=f"127.0.0.1:{port}")
    as_viewer = {"authorization": f"Bearer {viewer}"}

    assert grpc.is_server_live() and grpc.is_server_ready()  # health is public, as over HTTP
    assert grpc.get_server_metadata().name == "finalmile"
    assert grpc.is_model_ready("p", headers=as_viewer)
    metadata = grpc.get_model_metadata("p", headers=as_viewer)
    assert [i.name for i in metadata.inputs] == list(X.columns) and metadata.versions == ["1"]

    answer = grpc.infer("p", _inputs(5, list(X.columns)), headers=as_viewer)
    np.testing.assert_allclose(answer.as_numpy("score"), expected["score"].to_numpy(), rtol=1e-6)
    assert list(answer.as_numpy("label")) == list(expected["label"])
    response = answer.get_response()
    assert response.model_name == "p" and response.model_version == "1"
    request_id = response.parameters["finalmile-request-id"].string_param
    one = grpc.infer("p", _inputs(1, list(X.columns)), outputs=[triton.InferRequestedOutput("score")],
                     headers=as_viewer)  # fmt: skip
    assert [o.name for o in one.get_response().outputs] == ["score"]

    # concurrent calls share batches (handed to the HTTP loop in groups) and each gets its own rows' answer
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(lambda i: grpc.infer("p", _inputs(1, list(X.columns), i), headers=as_viewer), range(60))
        )
    scores = [float(a.as_numpy("score")[0]) for a in answers]
    np.testing.assert_allclose(scores, client_scores(home, X.head(60)), atol=1e-6)  # float32, batched or not
    assert len({a.get_response().parameters["finalmile-request-id"].string_param for a in answers}) == 60

    # the same permissions: no token, a wrong one
    assert _refused(grpc.infer, "p", _inputs(1, list(X.columns))).status() == "StatusCode.UNAUTHENTICATED"
    wrong = _refused(grpc.infer, "p", _inputs(1, list(X.columns)), headers={"authorization": "Bearer fm_nope"})
    assert wrong.status() == "StatusCode.UNAUTHENTICATED"
    # bad input names the problem
    unknown = _refused(grpc.infer, "nope", _inputs(1, list(X.columns)), headers=as_viewer)
    assert unknown.status() == "StatusCode.NOT_FOUND" and "nope" in unknown.message()
    missing = _refused(grpc.infer, "p", _inputs(1, list(X.columns)[1:]), headers=as_viewer)
    assert missing.status() == "StatusCode.INVALID_ARGUMENT" and X.columns[0] in missing.message()
    bad_version = _refused(grpc.infer, "p", _inputs(1, list(X.columns)), model_version="two", headers=as_viewer)
    assert bad_version.status() == "StatusCode.INVALID_ARGUMENT" and "version" in bad_version.message()

    # logged like every inference, counted under the grpc protocol
    with Client(url=server.url, token=owner) as remote:
        deadline = time.monotonic() + 20
        rows = 0
        while time.monotonic() < deadline and rows < 5:
            rows = int(remote.query(f"SELECT count(*) AS n FROM logs WHERE request_id = '{request_id}'").n[0])
            time.sleep(0.3)
        assert rows == 5
    metrics = httpx.get(f"{server.url}/metrics", headers={"authorization": f"Bearer {owner}"}).text
    assert 'protocol="grpc",status="200"' in metrics and 'protocol="grpc",status="400"' in metrics
