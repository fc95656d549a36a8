"""The local backend through the `Backend` protocol, and the one inference path the SDK shares with HTTP."""

from __future__ import annotations

import inspect
import threading
import time

import pandas as pd
import pytest

from finalmile import Client
from finalmile.backends.base import Backend
from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.errors import NotReadyError, PipelineNotDeployed
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
