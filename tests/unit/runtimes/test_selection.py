"""The runtime is chosen by measurement: timings recorded at upload, the fastest served for a deployment's size."""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from finalmile import Client
from finalmile.backends.config import DeploymentConfig
from finalmile.registry.loader import runtime_key
from finalmile.runtimes.selection import BATCH_ROWS, fastest
from tests.fixtures import tabular
from tests.unit.cli.test_cli import run

TIMINGS = {"onnx": {"1": 20.0, "100": 300.0, "1000": 2500.0}, "xgboost": {"1": 90.0, "100": 280.0, "1000": 900.0}}


def test_the_fastest_at_the_nearest_measured_size_wins() -> None:
    assert fastest(TIMINGS, 1) == "onnx"
    assert fastest(TIMINGS, 8) == "onnx"  # nearer 1 than 100 on a log scale
    assert fastest(TIMINGS, 64) == "xgboost"
    assert fastest(TIMINGS, 100_000) == "xgboost"


def test_upload_records_timings_and_each_deployment_serves_its_fastest(sqlite_client: Client) -> None:
    X, y = tabular(300)
    mv = sqlite_client.upload_model("forest", RandomForestClassifier(20, max_depth=4).fit(X, y), sample=X.head(50))
    timings = mv.conversion["timings_us"]
    assert set(timings) == {"onnx", "sklearn"}
    assert all(set(t) == {str(n) for n in BATCH_ROWS} and min(t.values()) > 0 for t in timings.values())
    assert mv.runtime == fastest(timings, 1) and "fastest by measurement" in mv.conversion["reason"]
    for batch in (1, 1000):
        name = f"p{batch}"
        sqlite_client.build_pipeline(name).add_model_step("forest:1").deploy(max_batch_size=batch)
        loaded = sqlite_client.services.local.target(name).current
        served = {type(r).__name__ for r in loaded_runtimes(loaded)}
        expected = {"onnx": "OnnxRuntime", "sklearn": "SklearnRuntime"}[fastest(timings, batch)]
        assert served == {expected}
    record = sqlite_client.services.metadata.get_by_ref("forest:1")
    assert runtime_key(record, "native", 1000) == "sklearn"
    assert runtime_key(record, "auto", 1000) == fastest(timings, 1000)
    assert DeploymentConfig().max_batch_size == 64


def loaded_runtimes(loaded) -> list[object]:  # type: ignore[no-untyped-def]
    return [step.runtime for step in loaded.steps.steps if hasattr(step, "runtime")]


def test_models_show_prints_the_measured_timings(cli_env, capsys) -> None:  # type: ignore[no-untyped-def]
    X, y = tabular(200)
    with Client() as client:
        client.upload_model("forest", RandomForestClassifier(10, max_depth=3).fit(X, y), sample=X.head(30))
    code, out, _ = run(capsys, "models", "show", "forest:1")
    assert code == 0 and "1000 rows (µs)" in out and "★" in out and "sklearn" in out and "onnx" in out
