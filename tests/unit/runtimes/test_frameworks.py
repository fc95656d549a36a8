"""Upload and predict for every framework, on both metadata backends, with the documented output names."""

from __future__ import annotations

import warnings
from pathlib import Path

import joblib
import lightgbm as lgb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import xgboost as xgb
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from finalmile import Client
from finalmile.runtimes.selection import fastest
from finalmile.sdk.models import ModelVersion
from tests.fixtures import multiclass, tabular

X, y = tabular()


def assert_converted(mv: ModelVersion) -> None:
    """Converted to ONNX, its outputs checked equal to the native model's, and served by whichever runtime measured
    fastest at one row. Which one wins is a timing, the benchmarks' business (bench/runtimes.py): under CI's load
    a 10-tree LightGBM regressor's own predictor once measured faster than ONNX Runtime."""
    conversion = mv.record.conversion or {}
    assert conversion.get("status") == "converted" and mv.record.onnx_sha256 is not None, conversion
    assert set(conversion["timings_us"]) == {mv.framework, "onnx"}
    assert mv.runtime == fastest(conversion["timings_us"], 1)


def check_classifier(client: Client, mv_ref: str, n_classes: int = 2, classes: list[object] | None = None) -> None:
    mv = client.model(mv_ref)
    out = mv.predict(X.head(20))
    assert isinstance(out, pd.DataFrame)
    expected = ["label", "probabilities"] + (["score"] if n_classes == 2 else [])
    assert list(out.columns) == expected
    proba = np.stack(out.probabilities.to_numpy())
    assert proba.shape == (20, n_classes)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    mv_classes = np.asarray(classes if classes is not None else mv.classes)
    assert list(out.label) == list(mv_classes[proba.argmax(axis=1)])
    native = mv.predict(X.head(20), runtime="native")
    assert list(native.label) == list(out.label)
    np.testing.assert_allclose(np.stack(native.probabilities.to_numpy()), proba, atol=1e-4)
    assert [c.name for c in mv.schema.outputs] == expected


def test_sklearn_forest_is_converted_and_matches(client: Client) -> None:
    forest = RandomForestClassifier(n_estimators=10, max_depth=4, random_state=0).fit(X, y)
    mv = client.upload_model("forest", forest, sample=X.head(50))
    assert (mv.version, mv.framework, mv.runtime) == (1, "sklearn", "onnx")
    assert mv.conversion["status"] == "converted"
    assert mv.conversion["rows_checked"] == 50 and mv.conversion["label_mismatches"] == 0
    assert mv.conversion["max_abs_diff"] < 1e-4
    assert mv.schema.input_names() == list(X.columns)
    assert mv.sample().num_rows == 50
    check_classifier(client, "forest:1")
    np.testing.assert_allclose(
        np.stack(mv.predict(X.head(20)).probabilities.to_numpy()), forest.predict_proba(X.head(20)), atol=1e-5
    )


def test_predict_returns_the_callers_type(client: Client) -> None:
    mv = client.upload_model("lr", LogisticRegression().fit(X, y), sample=X.head(30))
    rows = X.head(5)
    assert isinstance(mv.predict(pl.from_pandas(rows)), pl.DataFrame)
    arrow = mv.predict(pa.Table.from_pandas(rows))
    assert isinstance(arrow, pa.Table) and arrow.num_rows == 5
    as_dict = mv.predict({c: rows[c].to_numpy() for c in rows.columns})
    assert as_dict["probabilities"].shape == (5, 2)
    assert list(as_dict["label"]) == list(arrow.column("label").to_pylist())


def test_sklearn_pipeline_regressor_and_multiclass(client: Client) -> None:
    pipe = make_pipeline(StandardScaler(), LogisticRegression()).fit(X, y)
    assert_converted(client.upload_model("pipe", pipe, sample=X.head(40)))
    check_classifier(client, "pipe")
    reg = client.upload_model("reg", LinearRegression().fit(X, X.x0 * 2.0), sample=X.head(40))
    assert_converted(reg)
    assert reg.task == "regression"
    out = reg.predict(X.head(10))
    assert list(out.columns) == ["prediction"]
    np.testing.assert_allclose(out.prediction, X.x0.head(10) * 2.0, atol=1e-4)
    Xm, ym = multiclass()
    mv = client.upload_model("multi", RandomForestClassifier(5, random_state=0).fit(Xm, ym), sample=Xm.head(40))
    assert mv.classes == [0, 1, 2]
    check_classifier(client, "multi", n_classes=3)


def test_string_labels_survive_conversion(client: Client) -> None:
    labels = np.where(y == 1, "fraud", "ok")
    mv = client.upload_model("strings", LogisticRegression().fit(X, labels), sample=X.head(40))
    assert mv.classes == ["fraud", "ok"]
    assert_converted(mv)
    assert set(mv.predict(X.head(30)).label) <= {"fraud", "ok"}
    check_classifier(client, "strings")


def test_sklearn_from_joblib_and_pickle_files(client: Client, tmp_path: Path) -> None:
    model = LogisticRegression().fit(X.to_numpy(), y)
    joblib.dump(model, tmp_path / "m.joblib")
    joblib.dump(model, tmp_path / "m.pkl")
    a = client.upload_model("files", tmp_path / "m.joblib")
    b = client.upload_model("files", str(tmp_path / "m.pkl"))
    assert (a.version, b.version) == (1, 2)
    assert a.framework == b.framework == "sklearn"
    # Unnamed features are called f0…, and with no sample the parity rows are drawn from the schema.
    assert a.schema.input_names() == [f"f{i}" for i in range(X.shape[1])]
    assert a.conversion["sample"] == "drawn from the schema" and a.conversion["status"] == "converted"
    out = a.predict(X.head(3).set_axis([f"f{i}" for i in range(X.shape[1])], axis=1))
    assert list(out.label) == list(model.predict(X.head(3).to_numpy()))


def test_xgboost_object_json_and_ubj(client: Client, tmp_path: Path) -> None:
    model = xgb.XGBClassifier(n_estimators=10, max_depth=3).fit(X, y)
    mv = client.upload_model("xgb", model, sample=X.head(50))
    assert mv.framework == "xgboost"
    assert_converted(mv)
    check_classifier(client, "xgb")
    np.testing.assert_allclose(mv.predict(X.head(10)).score, model.predict_proba(X.head(10))[:, 1], atol=1e-5)
    model.save_model(tmp_path / "m.json")
    model.save_model(tmp_path / "m.ubj")
    for path in ("m.json", "m.ubj"):
        version = client.upload_model("xgb", tmp_path / path, sample=X.head(20))
        assert version.framework == "xgboost"
        assert_converted(version)
        assert version.schema.input_names() == list(X.columns)
    reg = client.upload_model("xgb-reg", xgb.XGBRegressor(n_estimators=10).fit(X, X.x0), sample=X.head(20))
    assert reg.task == "regression" and list(reg.predict(X.head(3)).columns) == ["prediction"]
    Xm, ym = multiclass()
    client.upload_model("xgb-multi", xgb.XGBClassifier(n_estimators=5).fit(Xm, ym), sample=Xm.head(40))
    check_classifier(client, "xgb-multi", n_classes=3)


def test_lightgbm_object_and_text_file(client: Client, tmp_path: Path) -> None:
    model = lgb.LGBMClassifier(n_estimators=10, verbose=-1).fit(X, np.where(y == 1, "yes", "no"))
    mv = client.upload_model("lgb", model, sample=X.head(50))
    assert (mv.framework, mv.classes) == ("lightgbm", ["no", "yes"])
    assert_converted(mv)
    check_classifier(client, "lgb")
    model.booster_.save_model(tmp_path / "m.txt")
    from_file = client.upload_model("lgb", tmp_path / "m.txt")
    assert from_file.classes == [0, 1]  # a bare booster only knows class indices
    reg = client.upload_model("lgb-reg", lgb.LGBMRegressor(n_estimators=10, verbose=-1).fit(X, X.x0))
    assert_converted(reg)
    assert reg.task == "regression"


def test_onnx_file_and_model_proto(client: Client, tmp_path: Path) -> None:
    from skl2onnx import to_onnx

    proto = to_onnx(LinearRegression().fit(X.to_numpy(np.float32), X.x0), X.to_numpy(np.float32)[:1])
    (tmp_path / "m.onnx").write_bytes(proto.SerializeToString())
    mv = client.upload_model("raw", tmp_path / "m.onnx")
    assert (mv.framework, mv.runtime) == ("onnx", "onnx")
    [column] = mv.schema.inputs or []
    assert (column.name, column.dtype, column.shape) == ("X", "float32", (X.shape[1],))
    out = mv.predict({"X": X.to_numpy(np.float32)[:4]})
    np.testing.assert_allclose(out["variable"], X.x0.head(4), atol=1e-4)
    assert client.upload_model("raw", proto).artifact_sha256 == mv.artifact_sha256  # same bytes, same artifact


def test_runtime_native_keeps_the_framework(client: Client) -> None:
    mv = client.upload_model("native", LogisticRegression().fit(X, y), sample=X.head(20), runtime="native")
    assert mv.runtime == "sklearn" and mv.record.onnx_sha256 is None
    assert "runtime='native'" in mv.conversion["reason"]
    assert mv.predict(X.head(2)).shape == (2, 3)


def test_a_mismatch_keeps_the_native_runtime_and_says_by_how_much(home: Path, database_url: str) -> None:
    from finalmile.config import FinalmileSettings

    strict = FinalmileSettings(home=home, database_url=database_url, parity_atol=0.0, parity_rtol=0.0)
    with Client(settings=strict) as client:
        mv = client.upload_model("strict", LogisticRegression().fit(X, y), sample=X.head(100))
    assert mv.conversion["status"] == "mismatch"
    assert mv.runtime == "sklearn" and mv.record.onnx_sha256 is None
    assert mv.conversion["max_abs_diff"] > 0
    assert "probabilities differ by up to" in mv.conversion["reason"]


def test_an_unsupported_estimator_is_recorded_and_served_natively(client: Client) -> None:
    from tests.fixtures import ThresholdClassifier

    mv = client.upload_model("custom", ThresholdClassifier().fit(X, y), sample=X.head(20))
    assert mv.conversion["status"] == "failed"
    assert mv.conversion["reason"].startswith("conversion failed:")
    assert "ThresholdClassifier" in mv.conversion["reason"]
    assert mv.runtime == "sklearn"
    assert list(mv.predict(X.head(3)).columns) == ["label", "probabilities", "score"]


def test_torch_module_and_torchscript_file(client: Client, tmp_path: Path) -> None:
    import torch

    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(X.shape[1], 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(x), dim=-1)

    torch.manual_seed(0)
    net = Net().eval()
    sample = {"features": X.to_numpy(np.float32)[:8]}
    mv = client.upload_model("net", net, sample=sample)
    assert mv.framework == "torch"
    [inp] = mv.schema.inputs or []
    assert (inp.name, inp.shape) == ("features", (X.shape[1],))
    out = mv.predict({"features": X.to_numpy(np.float32)[:5]})
    with torch.no_grad():
        expected = net(torch.tensor(X.to_numpy(np.float32)[:5])).numpy()
    np.testing.assert_allclose(out["output"], expected, rtol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.trace(net, torch.tensor(sample["features"])).save(str(tmp_path / "net.pt"))
    scripted = client.upload_model("net", tmp_path / "net.pt", sample=sample)
    np.testing.assert_allclose(
        scripted.predict({"features": X.to_numpy(np.float32)[:5]})["output"], expected, rtol=1e-5
    )


def test_mlflow_model_directory(client: Client, tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import mlflow.sklearn
        from mlflow.models import infer_signature

        model = LogisticRegression().fit(X, y)
        mlflow.sklearn.save_model(
            model, tmp_path / "mlm", serialization_format="cloudpickle", signature=infer_signature(X, model.predict(X))
        )
        mv = client.upload_model("mlf", tmp_path / "mlm")
        out = mv.predict(X.head(6))
    assert mv.framework == "mlflow"
    assert mv.schema.input_names() == list(X.columns)
    assert list(out.prediction) == list(model.predict(X.head(6)))
