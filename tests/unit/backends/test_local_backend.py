"""The local backend through the `Backend` protocol, and the one inference path the SDK shares with HTTP."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.arrow.tensors import NamedRows, TensorRows, batch_table
from finalmile.backends.base import Backend, InferRequest
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.errors import NotReadyError, PipelineNotDeployed, SchemaError
from finalmile.pipelines.loaded import RequestResult
from tests.fixtures import SleepModel, SumModel, tabular

X, _ = tabular(50)


def test_the_local_backend_has_every_member_of_the_protocol_with_the_same_parameters() -> None:
    members = [n for n, v in vars(Backend).items() if callable(v) and not n.startswith("_")]
    assert set(members) >= {"deploy", "undeploy", "sync", "target", "deployed", "serves", "infer_each", "close"}
    for name in members:
        wanted = list(inspect.signature(getattr(Backend, name)).parameters)
        assert list(inspect.signature(getattr(LocalBackend, name)).parameters)[: len(wanted)] == wanted, name


def test_a_version_that_cannot_load_is_never_recorded() -> None:
    recorded: list[int] = []

    def broken(name: str, version: int, config: DeploymentConfig):  # type: ignore[no-untyped-def]
        raise PipelineNotDeployed(name, version)

    backend = LocalBackend(broken, dict)
    with pytest.raises(PipelineNotDeployed):
        backend.deploy("p", 1, DeploymentConfig(), lambda: recorded.append(1))
    assert recorded == [] and backend.deployed() == {}


def test_embedded_inference_is_batched_measured_and_logged_like_http(sqlite_client: Client) -> None:
    client = sqlite_client
    client.upload_model("slow", SleepModel, sample=X.head(5))
    pipeline = client.build_pipeline("slow").add_model_step("slow:1")
    pipeline.deploy(max_batch_size=64, max_delay_ms=5)
    results: list[pd.DataFrame] = []

    def call(i: int) -> None:
        results.append(pipeline.infer(X.iloc[[i]]))

    threads = [threading.Thread(target=call, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 12 and all(len(r) == 1 for r in results)
    metrics = client.services.metrics.exposition().decode()
    rows = _sample(metrics, 'finalmile_rows_total{pipeline="slow"}')
    requests = _sample(metrics, 'finalmile_batch_requests_count{pipeline="slow"}')
    assert rows == 12 and requests < 12  # concurrent calls from threads shared batches
    assert len(pipeline.logs()) == 12  # and every row is in the log


def test_embedded_inference_tells_not_deployed_from_unknown(sqlite_client: Client) -> None:
    sqlite_client.upload_model("sum", SumModel, sample=X.head(5))
    sqlite_client.build_pipeline("idle").add_model_step("sum:1").create_version()
    with pytest.raises(NotReadyError, match="exists but is not deployed"):
        sqlite_client.build_pipeline("idle").infer(X.head(1))
    with pytest.raises(PipelineNotDeployed, match="pipeline 'nope' is not deployed"):
        sqlite_client.build_pipeline("nope").infer(X.head(1))


def test_a_failed_embedded_request_is_an_error_row_in_the_log(sqlite_client: Client) -> None:
    sqlite_client.upload_model("sum", SumModel, sample=X.head(5))
    p = sqlite_client.build_pipeline("p").add_model_step("sum:1")
    p.deploy()
    with pytest.raises(Exception, match="column"):
        p.infer(pd.DataFrame({"nope": [1.0]}))
    time.sleep(0.01)
    logged = p.logs()
    assert list(logged.status) == ["error"] and "nope" in logged.error[0]


def _sample(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    raise AssertionError(f"{name} not in the metrics")


def test_only_a_pipeline_measured_tiny_runs_inline(sqlite_client) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    from tests.fixtures import tabular

    X, y = tabular(100)
    sqlite_client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    sqlite_client.build_pipeline("p").add_model_step("m:1").deploy()
    slot = sqlite_client.services.local.get("p")
    assert 0 < slot.current.one_row_s < 0.01  # measured at load on the model's sample row
    slot.current.one_row_s = 1e-5
    assert slot._inline(1) and slot._inline(16) and not slot._inline(17)
    slot.current.one_row_s = 1e-3
    assert not slot._inline(1)


def test_decoded_rows_stay_numpy_until_their_batch_and_answer_and_log_as_a_table_would(sqlite_client: Client) -> None:
    client = sqlite_client
    Xy, y = tabular(50)
    client.upload_model("lr", LogisticRegression().fit(Xy, y), sample=Xy.head(5))
    client.build_pipeline("p").add_model_step("lr:1").deploy(max_batch_size=64, max_delay_ms=20)
    rows, columns = Xy.head(3), list(Xy.columns)
    forms = {
        "table": pa.Table.from_pandas(rows, preserve_index=False),
        "named": NamedRows(rows.to_numpy(), tuple(columns)),
        "reordered": NamedRows(rows[columns[::-1]].to_numpy(), tuple(columns[::-1])),
        "tensor": TensorRows(rows.to_numpy(), "input-0"),
    }
    current = client.services.backend.target("p").current  # type: ignore[attr-defined]
    conformed = {name: current.conform_request(form) for name, form in forms.items()}
    assert all(isinstance(conformed[n], np.ndarray) for n in ("named", "reordered", "tensor"))
    np.testing.assert_array_equal(conformed["reordered"], rows.to_numpy())  # the model's column order
    assert batch_table([conformed["named"], conformed["tensor"]]).column("input").num_chunks == 1

    async def together() -> list[RequestResult]:
        dataplane = client.services.dataplane
        return await asyncio.gather(*(dataplane.infer(InferRequest("p", form)) for form in forms.values()))

    results = dict(zip(forms, asyncio.run(together()), strict=True))
    for name, result in results.items():
        assert result.table.equals(results["table"].table), name
    client.services.logs.flush()
    ids = ", ".join(f"'{r.request_id}'" for r in results.values())
    logged = client.query(f"SELECT * FROM logs WHERE request_id IN ({ids}) ORDER BY request_id, row")
    assert len(logged) == 12 and logged.status.eq("ok").all()
    by_request = {rid: frame.drop(columns=["request_id", "time", "latency_ms"]).reset_index(drop=True)
                  for rid, frame in logged.groupby("request_id")}  # fmt: skip
    for result in results.values():
        pd.testing.assert_frame_equal(by_request[result.request_id], by_request[results["table"].request_id])
    np.testing.assert_allclose(by_request[results["named"].request_id][[f"in_{c}" for c in columns]], rows)
    # a tensor the model cannot take is refused as the table would be, naming the problem
    with pytest.raises(SchemaError) as wrong:
        current.conform_request(TensorRows(rows.to_numpy()[:, :3], "input-0"))
    with pytest.raises(SchemaError) as same:
        current.conform(forms["tensor"].table().select([0]).set_column(0, "input-0", pa.FixedSizeListArray.from_arrays(
            pa.array(rows.to_numpy()[:, :3].reshape(-1)), 3)))  # fmt: skip
    assert str(wrong.value) == str(same.value)
