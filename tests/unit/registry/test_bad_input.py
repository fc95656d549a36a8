"""Bad uploads get a clear finalmile error and register nothing: no row, no orphan artifact."""

from __future__ import annotations

import os
from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client, IntegrityError, InvalidModelError
from finalmile.errors import FinalmileError, SchemaError
from tests.fixtures import NoPredict, SumModel, tabular

X, y = tabular(100)


def stored_files(client: Client) -> list[Path]:
    root = client.services.artifacts.root / "sha256"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def assert_nothing_registered(client: Client) -> None:
    assert client.models() == []
    assert stored_files(client) == []


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("model.joblib", b"not a pickle at all", "not a readable joblib/pickle file"),
        ("model.onnx", b"\x08\x07\x12\x04trunc", "not a valid ONNX model"),
        ("model.json", b'{"learner": {"truncated": ', "not a readable XGBoost model"),
        ("model.txt", b"tree\nversion=v4\n", "not a readable LightGBM model"),
        ("model.pt", b"PK\x03\x04broken zip", "not a TorchScript or torch.export file"),
        ("model.h5", b"whatever", "unknown model format '.h5'"),
        ("model.py", b"class Broken(:\n", "importing it failed: SyntaxError"),
    ],
)
def test_corrupt_or_unknown_files(client: Client, tmp_path: Path, filename: str, content: bytes, message: str) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    with pytest.raises(InvalidModelError, match=message):
        client.upload_model("bad", path)
    assert_nothing_registered(client)


def test_truncated_real_model(client: Client, tmp_path: Path) -> None:
    joblib.dump(LogisticRegression().fit(X, y), tmp_path / "m.joblib")
    data = (tmp_path / "m.joblib").read_bytes()
    (tmp_path / "m.joblib").write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidModelError, match="not a readable joblib/pickle file"):
        client.upload_model("bad", tmp_path / "m.joblib")
    assert_nothing_registered(client)


def test_missing_path_non_model_directory_and_class_without_predict(client: Client, tmp_path: Path) -> None:
    with pytest.raises(InvalidModelError, match="no such file or directory"):
        client.upload_model("bad", tmp_path / "nope.onnx")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.md").write_text("hello")
    with pytest.raises(InvalidModelError, match="is not a model directory"):
        client.upload_model("bad", tmp_path / "empty")
    with pytest.raises(InvalidModelError, match="cannot tell the framework of a NoPredict"):
        client.upload_model("bad", NoPredict())
    (tmp_path / "nopredict.py").write_text("class Thing:\n    def score(self, frame):\n        return 1\n")
    with pytest.raises(InvalidModelError, match="expected exactly one class with predict"):
        client.upload_model("bad", tmp_path / "nopredict.py")
    with pytest.raises(InvalidModelError, match="no class named Missing"):
        client.upload_model("bad", f"{tmp_path / 'nopredict.py'}:Missing")
    assert_nothing_registered(client)


def test_bad_names_aliases_and_samples_register_nothing(client: Client) -> None:
    model = LogisticRegression().fit(X, y)
    with pytest.raises(FinalmileError, match="invalid model name"):
        client.upload_model("has space", model)
    with pytest.raises(FinalmileError, match="invalid alias"):
        client.upload_model("ok", model, alias="12")
    with pytest.raises(SchemaError, match="column 'x0': missing"):
        client.upload_model("ok", model, sample=X.drop(columns=["x0"]))
    with pytest.raises(FinalmileError, match="runtime: must be"):
        client.upload_model("ok", model, runtime="gpu")
    assert_nothing_registered(client)


def test_a_failed_insert_removes_the_artifacts_it_wrote(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_insert(*args: object, **kwargs: object) -> None:
        raise RuntimeError("database went away")

    monkeypatch.setattr(client.services.metadata, "create_version", broken_insert)
    with pytest.raises(RuntimeError, match="database went away"):
        client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    assert stored_files(client) == []


def test_a_tampered_artifact_is_refused_at_load(client: Client) -> None:
    mv = client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    path = client.services.artifacts.path_of(mv.record.onnx_sha256 or "")
    os.chmod(path, 0o644)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="tampered"):
        client.model("m:1").predict(X.head(2))
    # The native artifact is intact and still serves when asked for explicitly.
    assert client.model("m:1").predict(X.head(2), runtime="native").shape == (2, 3)


def test_deleting_versions_removes_unshared_artifacts(client: Client) -> None:
    client.upload_model("m", SumModel, alias="champion")
    client.upload_model("m", SumModel)  # same source, same artifact as version 1
    client.upload_model("m", LogisticRegression().fit(X, y), runtime="native")
    before = stored_files(client)
    client.delete_model_version("m", 2)
    assert stored_files(client) == before  # version 1 still uses them
    client.delete_model_version("m", 3)
    assert len(stored_files(client)) == len(before) - 1
    assert [v.version for v in client.model_versions("m")] == [1]
