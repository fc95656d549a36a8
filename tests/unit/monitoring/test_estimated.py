"""Performance estimated before labels (CBPE): on data whose true accuracy is known, the estimate matches the
accuracy the labels later show, on traffic like the reference and on a shift that lowers it; bad input is refused
naming the field, storing nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression

from finalmile.errors import InvalidInputError

RNG = np.random.default_rng(5)


def _rows(n: int, shift: float = 0.0) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Rows whose label is drawn from a known probability (so the best accuracy is known), and that probability.
    `shift` pulls x0 towards the decision boundary: rows become harder and accuracy falls, with no label needed."""
    x0 = RNG.normal(0, 1.5, n) * (1 - shift)
    frame = pd.DataFrame({"x0": x0, "x1": RNG.normal(0, 1, n)})
    p = 1 / (1 + np.exp(-2.5 * x0))
    return frame, (RNG.random(n) < p).astype(int), p


def test_the_estimate_matches_the_accuracy_labels_show_later_and_falls_with_a_shift(client) -> None:  # type: ignore[no-untyped-def]
    train, y_train, _ = _rows(4000)
    client.upload_model("m", LogisticRegression().fit(train, y_train), sample=train.head(50))
    reference = train.assign(label=y_train)  # a validation set with its labels
    estimates = {}
    for name, shift in (("calm", 0.0), ("shifted", 0.7)):
        pipeline = client.build_pipeline(name).add_model_step("m:1")
        pipeline.deploy()
        rows, truth, p = _rows(1500, shift)
        ids = [pipeline.infer_with_metadata(rows.iloc[[i]]).request_id for i in range(len(rows))]  # type: ignore[attr-defined]
        monitors = {
            metric: client.build_monitor(
                f"{name}-{metric}", name, "estimated_performance", metric=metric, reference=reference, window="1h"
            )
            for metric in ("accuracy", "roc_auc", "f1")
        }
        now = datetime.now(UTC) + timedelta(seconds=1)
        for metric, monitor in monitors.items():
            (before,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
            estimates[name, metric] = before.score
            assert before.evidence["lower"] < before.score < before.evidence["upper"]
            assert before.evidence["labelled"] == 0 and "realised" not in before.evidence
        expected_accuracy = float(np.mean(np.maximum(p, 1 - p)))  # the best any model does on these rows
        assert estimates[name, "accuracy"] == pytest.approx(expected_accuracy, abs=0.03)
        client.add_ground_truth(name, pd.DataFrame({"request_id": ids, "label": truth}))
        for metric, monitor in monitors.items():
            (after,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
            assert after.evidence["labelled"] == len(rows)
            assert after.score == estimates[name, metric]  # the estimate does not wait for labels
            assert after.score == pytest.approx(after.evidence["realised"], abs=0.035), (name, metric)
    assert estimates["shifted", "accuracy"] < estimates["calm", "accuracy"] - 0.1
    assert estimates["shifted", "roc_auc"] < estimates["calm", "roc_auc"] - 0.05


def test_bad_input_names_the_field_and_stores_nothing(client) -> None:  # type: ignore[no-untyped-def]
    train, y_train, _ = _rows(400)
    client.upload_model("m", LogisticRegression().fit(train, y_train), sample=train.head(50))
    pipeline = client.build_pipeline("p").add_model_step("m:1")
    pipeline.deploy()
    pipeline.infer(train.head(50))
    reference = train.assign(label=y_train)
    now = datetime.now(UTC)
    for options, said in [
        ({"metric": "log_loss", "reference": reference}, "metric"),
        ({"metric": "rmse", "reference": reference}, "columns: estimating rmse learns each row's loss"),
        ({"metric": "accuracy", "reference": reference, "columns": ["x0"]}, "columns: accuracy is estimated"),
        ({"metric": "mae", "reference": reference, "columns": ["nope"]}, "does not log columns 'nope'"),
        ({"metric": "accuracy"}, "reference"),
        ({"metric": "accuracy", "reference": train}, "label"),
        (
            {"metric": "accuracy", "reference": (now - timedelta(hours=1), now)},
            "reference: no ground truth has arrived",
        ),
        ({"metric": "accuracy", "reference": reference, "prediction": "out_nope"}, "nope"),
        ({"metric": "accuracy", "reference": "m:1"}, "reference"),
    ]:
        with pytest.raises(InvalidInputError, match=said):
            client.build_monitor("e", "p", "estimated_performance", window="1h", **options).save()
    assert client.monitors() == []


def _regression_rows(n: int, low: float, high: float) -> tuple[pd.DataFrame, np.ndarray]:
    """y = 2·x0 + noise whose size grows with |x1|, |x1| drawn between `low` and `high`: a model of x0 alone errs more
    where |x1| is large, so moving x1 outwards raises the error with nothing in the predictions to show it."""
    x1 = RNG.uniform(low, high, n) * RNG.choice([-1.0, 1.0], n)
    frame = pd.DataFrame({"x0": RNG.normal(0, 1, n), "x1": x1})
    return frame, 2 * frame.x0.to_numpy() + RNG.normal(0, 1, n) * (0.2 + np.abs(x1))


def test_a_regressors_mae_and_rmse_are_estimated_before_labels_and_rise_with_a_shift(client) -> None:  # type: ignore[no-untyped-def]
    train, y_train = _regression_rows(4000, 0.0, 3.0)  # the reference covers every |x1| the windows will see
    client.upload_model("r", LinearRegression().fit(train, y_train), sample=train.head(50))
    reference = train.assign(label=y_train)
    estimates = {}
    for name, low, high in (("calm", 0.0, 1.0), ("wide", 2.0, 3.0)):
        pipeline = client.build_pipeline(name).add_model_step("r:1")
        pipeline.deploy()
        rows, truth = _regression_rows(600, low, high)
        ids = [pipeline.infer_with_metadata(rows.iloc[[i]]).request_id for i in range(len(rows))]  # type: ignore[attr-defined]
        now = datetime.now(UTC) + timedelta(seconds=1)
        monitors = {
            metric: client.build_monitor(
                f"{name}-{metric}",
                name,
                "estimated_performance",
                metric=metric,
                columns=["x0", "x1"],
                reference=reference,
                window="1h",
            )  # fmt: skip
            for metric in ("mae", "rmse")
        }
        for metric, monitor in monitors.items():
            assert monitor.config.columns == ["in_x0", "in_x1"] and monitor.config.prediction is None
            (before,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
            assert before.evidence["labelled"] == 0
            assert before.evidence["lower"] < before.score < before.evidence["upper"]
            estimates[name, metric] = before.score
        client.add_ground_truth(name, pd.DataFrame({"request_id": ids, "label": truth}))
        for metric, monitor in monitors.items():
            (after,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
            assert after.evidence["labelled"] == len(rows) and after.score == estimates[name, metric]
            assert after.score == pytest.approx(after.evidence["realised"], rel=0.15), (name, metric)
    assert estimates["wide", "mae"] > 1.5 * estimates["calm", "mae"]  # before any label came
    assert estimates["wide", "rmse"] > 1.5 * estimates["calm", "rmse"]
