"""Inputs users actually have (issue 17): 2-D numpy arrays as frames, handles as names, input column names for
monitors, a preview without dates; and one model load per process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import InvalidInputError, SchemaError

rng = np.random.default_rng(0)
MATRIX = rng.standard_normal((200, 3))
LABELS = (MATRIX[:, 0] > 0).astype(int)


def test_a_2d_numpy_array_is_a_frame_for_sample_predict_and_infer(sqlite_client: Client) -> None:
    unnamed = sqlite_client.upload_model("unnamed", LogisticRegression().fit(MATRIX, LABELS), sample=MATRIX[:50])
    assert unnamed.schema.input_names() == ["f0", "f1", "f2"] and unnamed.conversion["status"] == "converted"
    out = unnamed.predict(MATRIX[:4])
    assert isinstance(out, dict) and out["probabilities"].shape == (4, 2)
    expected = unnamed.predict(pd.DataFrame(MATRIX[:4], columns=["f0", "f1", "f2"]))
    np.testing.assert_allclose(out["score"], expected.score)

    frame = pd.DataFrame(MATRIX, columns=["amount", "age", "v1"])
    named = sqlite_client.upload_model("named", LogisticRegression().fit(frame, LABELS), sample=MATRIX[:50])
    assert named.schema.input_names() == ["amount", "age", "v1"]  # the model's own names, in its order

    pipeline = sqlite_client.build_pipeline("p").add_model_step(named)
    pipeline.deploy()
    served = pipeline.infer(MATRIX[:5])
    np.testing.assert_array_equal(served["label"], named.predict(frame.head(5)).label)
    assert {"in_amount", "in_age", "in_v1"} <= set(pipeline.logs().columns)
    with pytest.raises(SchemaError):
        pipeline.infer(MATRIX[:2, :2])  # two columns for a model of three
    with pytest.raises(InvalidInputError, match="2-D array of numbers"):
        named.predict(np.array([["a", "b", "c"]]))


def deployed_fraud(client: Client) -> tuple[pd.DataFrame, Any, Any]:
    """A logistic regression on `amount`, `age`, `v1`, deployed as the pipeline `fraud`."""
    frame = pd.DataFrame(MATRIX, columns=["amount", "age", "v1"])
    mv = client.upload_model("m", LogisticRegression().fit(frame, LABELS), sample=frame.head(100))
    pipeline = client.build_pipeline("fraud").add_model_step(mv)
    pipeline.deploy()
    return frame, mv, pipeline


def test_handles_stand_for_names(sqlite_client: Client) -> None:
    frame, mv, pipeline = deployed_fraud(sqlite_client)
    pipeline.infer(frame.head(20))
    assay = sqlite_client.build_assay("drift", pipeline, "amount", baseline=mv, window="1h")
    assert assay.config.pipeline == "fraud" and assay.config.baseline.model == "m:1"  # type: ignore[union-attr]
    assert sqlite_client.model(mv).version == 1 and sqlite_client.pipeline(pipeline).name == "fraud"
    assert [m.name for m in sqlite_client.monitors(pipeline)] == []


def test_a_monitor_column_may_be_the_input_name_and_a_preview_needs_no_dates(sqlite_client: Client) -> None:
    frame, _, pipeline = deployed_fraud(sqlite_client)
    pipeline.infer(frame.head(30))
    assay = sqlite_client.build_assay("amount", "fraud", "amount", baseline=frame, window="1h")
    assert assay.config.column == "in_amount"
    score = sqlite_client.build_assay("score", "fraud", "score", baseline=frame.assign(score=0.5), window="1h")
    assert score.config.column == "out_score"
    preview = assay.preview()  # the last day, ending now
    assert len(preview) == 24 and preview.rows.sum() == 30
    last = preview.window_end.max().to_pydatetime()
    assert abs(last - datetime.now(UTC)) < timedelta(minutes=1)


def test_pipelines_that_pin_one_version_share_one_loaded_runtime(sqlite_client: Client) -> None:
    mv = sqlite_client.upload_model("m", LogisticRegression().fit(MATRIX, LABELS), sample=MATRIX[:20])
    for name in ("a", "b"):
        sqlite_client.build_pipeline(name).add_model_step(mv).deploy()
    backend = sqlite_client.services.local
    first, second = (backend.get(n).current.steps.steps[0] for n in ("a", "b"))
    assert first.runtime is second.runtime  # type: ignore[attr-defined]
    assert sqlite_client.model("m:1").load() is first.runtime  # type: ignore[attr-defined]
