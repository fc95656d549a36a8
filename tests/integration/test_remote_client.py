"""`Client(url=...)`: upload, build, deploy and infer on a real server with the same verbs as embedded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pytest
import xgboost as xgb
from sklearn.ensemble import RandomForestClassifier

from finalmile import Client
from finalmile.errors import FinalmileError
from finalmile.sdk.remote import RemoteClient
from tests.fixtures import tabular

X, y = tabular(300)


def test_same_verbs_remotely(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    Client(home=home).close()  # an empty store
    server = server_factory(home)
    with Client(url=server.url) as remote:
        assert isinstance(remote, RemoteClient)
        forest = RandomForestClassifier(10, max_depth=4, random_state=0).fit(X, y)
        mv = remote.upload_model("fraud", forest, sample=X.head(50), alias="champion", tags={"team": "risk"})
        assert (mv.version, mv.runtime, mv.tags) == (1, "onnx", {"team": "risk"})
        challenger = remote.upload_model("fraud", xgb.XGBClassifier(n_estimators=5).fit(X, y), sample=X.head(50))
        assert challenger.framework == "xgboost"
        (tmp_path / "scale.py").write_text("class Scale:\n    def predict(self, frame):\n        return frame * 1.0\n")
        pipeline = (
            remote.build_pipeline("fraud")
            .add_transform_step(tmp_path / "scale.py", name="scale")
            .add_shadow("fraud@champion", {"xgb": "fraud:2"})
            .add_check("high", "out.score > 0.9")
        )
        record = pipeline.deploy(max_batch_size=32)
        assert record.version == 1 and record.spec["steps"][1]["champion"][0]["model"] == "fraud:1"
        out = pipeline.infer(X.head(7))
        assert isinstance(out, pd.DataFrame)
        np.testing.assert_allclose(out.score, forest.predict_proba(X.head(7))[:, 1], atol=1e-5)
        assert isinstance(pipeline.infer(pl.from_pandas(X.head(2))), pl.DataFrame)
        assert pipeline.infer_with_metadata(X.head(1)).metadata()["model_versions"] == ["scale:1", "fraud:1"]
        assert remote.pipeline("fraud").steps[0].model == "scale:1"
        assert "fraud" in remote.pipelines()
        with pytest.raises(FinalmileError, match="column 'x0': missing") as err:
            pipeline.infer(X.head(1).drop(columns=["x0"]))
        assert err.value.status_code == 422
        pipeline.undeploy()
        with pytest.raises(FinalmileError, match="exists but is not deployed"):
            pipeline.infer(X.head(1))
    # The server wrote to the same store an embedded client reads.
    with Client(home=home) as local:
        assert local.model("fraud@champion").tags == {"team": "risk"}


def test_logs_query_and_ground_truth_remotely(tmp_path: Path, server_factory) -> None:  # type: ignore[no-untyped-def]
    home = tmp_path / "home"
    with Client(home=home) as local:
        local.upload_model("m", RandomForestClassifier(5, random_state=0).fit(X, y), sample=X.head(20))
        local.build_pipeline("p").add_model_step("m:1").deploy()
    server = server_factory(home)
    with Client(url=server.url) as remote:
        pipeline = remote.pipeline("p")
        ids = [pipeline.infer_with_metadata(X.iloc[[i]]).metadata()["request_id"] for i in range(3)]
        assert all(ids)
        logs = pipeline.logs(limit=10)
        assert len(logs) == 3 and set(logs.request_id) == set(ids)
        newest = logs.time.max().to_pydatetime()
        recent = pipeline.logs(start=newest, columns=["request_id", "out_score"])
        assert list(recent.columns) == ["request_id", "out_score"] and 1 <= len(recent) <= 3
        assert pipeline.logs(end=logs.time.min().to_pydatetime()).empty
        assert pipeline.export_logs(tmp_path / "export.csv") == 3
        assert set(pd.read_csv(tmp_path / "export.csv").request_id) == set(ids)
        receipt = pipeline.add_ground_truth(pd.DataFrame({"request_id": ids, "label": [1, 0, 1]}))
        assert (receipt.matched, receipt.unknown) == (3, 0)
        joined = remote.query("SELECT count(*) AS n FROM logs l JOIN ground_truth g ON g.key = l.request_id")
        assert joined.n[0] == 3
        with pytest.raises(FinalmileError, match="read-only"):
            remote.query("DROP VIEW logs")
        stream = remote.build_stream(
            "s", pipeline, {"broker": "redis", "subject": "in"}, {"broker": "redis", "subject": "out"}, batch_size=5
        )
        assert stream["config"]["batch_size"] == 5 and [s["name"] for s in remote.streams()] == ["s"]
        with pytest.raises(FinalmileError, match="batch_size"):
            remote.build_stream(
                "t", "p", {"broker": "redis", "subject": "a"}, {"broker": "redis", "subject": "b"}, batch_size=0
            )
