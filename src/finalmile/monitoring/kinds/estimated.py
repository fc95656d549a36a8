"""A classifier's performance estimated before its labels arrive: confidence-based performance estimation (CBPE).

The model's scores are calibrated on a reference that has labels (isotonic regression: score → the probability that
the row is positive); in each window the calibrated probability of every row says how likely its predicted label is
right, so the expected confusion matrix — and from it accuracy, precision, recall and F1 — follows from the scores
alone, and ROC AUC from the expected true- and false-positive curves. Valid while the relation between the inputs
and the label holds (covariate shift, not concept drift), which is what the realised metric, shown beside the
estimate once labels come, checks. The sampling error is the metric's standard error at the window's size.

A regressor's MAE or RMSE is estimated by direct loss estimation (DLE): a gradient-boosted model learns, on the
labelled reference, each row's loss (its absolute or squared error) from the model's inputs (`columns`) and its
prediction; a window's estimate is the mean loss that model predicts for its rows (the root of it for RMSE).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.logs.ground_truth import key_matches, logged_types
from finalmile.logs.query import LogReader
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import MonitorKind, fetch, fitted_once, quote
from finalmile.monitoring.kinds.performance import label_keys, performance_score, prediction_column

LOSS_METRICS = ("mae", "rmse")
"""A regressor's metrics, estimated by direct loss estimation."""
ESTIMATED_METRICS = ("accuracy", "precision", "recall", "f1", "roc_auc", *LOSS_METRICS)
LOSS_ROWS = 100_000
"""Reference rows the loss model learns from (a seeded sample of larger references): its estimate needs no more."""
THRESHOLD = 0.5
"""A row is predicted positive when its score is at least this (a binary classifier's `predict`)."""
BAND_SIGMAS = 3.0
CALIBRATION_DECIMALS = 4
"""Reference scores are grouped to this many decimals before calibrating: at most 10,001 weighted points whatever
the reference's size (a million rows fitted in 0.5 s; grouped, in milliseconds), the curve unchanged to 1e-4."""


class EstimatedPerformanceKind(MonitorKind):
    """`metric` of a binary classifier's score column (`prediction`, default `out_score`), estimated per window from
    a reference with labels (`baseline`: a labelled period of the log, or a validation frame the model scores)."""

    name = "estimated_performance"
    reference = "labelled"

    def check(self, config: MonitorConfig) -> list[str]:
        if config.metric not in ESTIMATED_METRICS:
            return [f"metric: {config.metric!r} cannot be estimated; use {', '.join(ESTIMATED_METRICS)}"]
        if config.baseline is None:
            return ["reference: estimating needs a reference with labels (a period of the log that has ground truth, "
                    "or a validation frame with the label column)"]  # fmt: skip
        if config.metric in LOSS_METRICS and not config.columns:
            return [f"columns: estimating {config.metric} learns each row's loss from the model's inputs; name them "
                    "(columns=[…])"]  # fmt: skip
        if config.metric not in LOSS_METRICS and config.columns:
            return [f"columns: {config.metric} is estimated from the scores alone; columns are for mae and rmse"]
        return []

    def higher_is_worse(self, config: MonitorConfig) -> bool:
        return config.metric in LOSS_METRICS

    def needs_baseline(self, config: MonitorConfig) -> bool:
        return True

    def logged_column(self, config: MonitorConfig) -> str | None:
        return prediction_of(config)

    def read(
        self,
        reader: LogReader,
        config: MonitorConfig,
        where: list[str],
        params: list[Any],
        extra: str,
        baseline: np.ndarray | None = None,
    ) -> pa.Table:
        """Each row's score, and its label where one has arrived (for the realised metric beside the estimate)."""
        with reader.connection() as conn:
            keys = label_keys(conn, config.pipeline)
            score = quote(prediction_of(config))
            truth, join = "NULL AS truth", ""
            if keys:  # labels joined by the first key they were sent under (request_id, as a rule)
                key = keys[0].replace("'", "")
                truth = f"g.{quote(config.label)} AS truth"
                same = key_matches(f"l.{quote(key)}", logged_types(conn).get(key))
                join = f" LEFT JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key_column = '{key}' AND {same}"
            features = "".join(f", {feature_select(c, i, 'l.')}" for i, c in enumerate(config.columns or []))
            sql = (
                f"SELECT l.time, CAST(l.{score} AS DOUBLE) AS value, {truth}{features}{extra} FROM logs l{join} "
                f"WHERE {' AND '.join(where)} AND l.status = 'ok'"
            )
            return fetch(conn, sql, params)

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        assert baseline is not None and baseline.ndim == 2
        if config.metric in LOSS_METRICS:
            return _estimated_loss(config, table, rows, baseline)
        scores = table.column("value").take(pa.array(rows)).to_numpy(zero_copy_only=False).astype(np.float64)
        kept = np.isfinite(scores)
        scores = scores[kept]
        if not len(scores):
            return None, {}
        calibrated = fitted_once("calibration", baseline, lambda b: calibrate(b[:, 0], b[:, 1]))(scores)
        estimate = estimate_metric(config.metric, scores, calibrated)
        error = sampling_error(config.metric, estimate, scores, calibrated)
        evidence: dict[str, Any] = {
            "estimate": estimate,
            "lower": estimate - BAND_SIGMAS * error,
            "upper": estimate + BAND_SIGMAS * error,
            "sampling_error": error,
        }
        truth = table.column("truth").take(pa.array(rows)).to_numpy(zero_copy_only=False)[kept]
        labelled = ~np.isnan(truth.astype(np.float64)) if len(truth) else np.zeros(0, dtype=bool)
        evidence["labelled"] = int(labelled.sum())
        if labelled.any():
            predicted = pa.array((scores[labelled] >= THRESHOLD).astype(np.int64))
            prediction = pa.array(scores[labelled]) if config.metric == "roc_auc" else predicted
            realised, _ = performance_score(config.metric, truth[labelled].astype(np.float64), prediction)
            evidence["realised"] = realised if np.isfinite(realised) else None
        return estimate, evidence


def prediction_of(config: MonitorConfig) -> str:
    """The logged prediction a monitor estimates from: the score of a classifier, the prediction of a regressor."""
    return config.prediction or (prediction_column(config.metric) if config.metric in LOSS_METRICS else "out_score")


def feature_select(column: str, i: int, alias: str = "") -> str:
    """A watched input read as a float named `f{i}` (the loss model's features, in the monitor's order)."""
    return f"CAST({alias}{quote(column)} AS DOUBLE) AS f{i}"


def _estimated_loss(
    config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray
) -> tuple[float | None, dict[str, Any]]:
    """MAE or RMSE by direct loss estimation; the realised value beside it where labels have arrived."""
    chosen = table.take(pa.array(rows))
    predicted = chosen.column("value").to_numpy(zero_copy_only=False).astype(np.float64)
    kept = np.isfinite(predicted)
    if not kept.any():
        return None, {}
    inputs = [chosen.column(f"f{i}").to_numpy(zero_copy_only=False) for i in range(len(config.columns or []))]
    X = np.column_stack([predicted, *inputs]).astype(np.float64)[kept]
    model = fitted_once(f"loss-{config.metric}", baseline, lambda b: fit_loss(b, config.metric))
    losses = np.maximum(model.predict(X), 0.0)
    mean, error = float(losses.mean()), float(losses.std() / np.sqrt(len(losses)))
    estimate = mean if config.metric == "mae" else float(np.sqrt(mean))
    if config.metric == "rmse":  # the delta method: the error of a square root of the mean squared error
        error = error / (2 * estimate) if estimate > 0 else float("nan")
    evidence: dict[str, Any] = {
        "estimate": estimate,
        "lower": max(estimate - BAND_SIGMAS * error, 0.0),
        "upper": estimate + BAND_SIGMAS * error,
        "sampling_error": error,
    }
    truth = chosen.column("truth").to_numpy(zero_copy_only=False).astype(np.float64)[kept]
    labelled = np.isfinite(truth)
    evidence["labelled"] = int(labelled.sum())
    if labelled.any():
        evidence["realised"], _ = performance_score(config.metric, truth[labelled], pa.array(predicted[kept][labelled]))
    return estimate, evidence


def fit_loss(reference: np.ndarray, metric: str) -> Any:
    """A model of each reference row's loss (absolute or squared error) from its prediction and inputs; the
    reference matrix holds prediction, truth, then the inputs."""
    from sklearn.ensemble import HistGradientBoostingRegressor  # here, not at import: clients import this module

    rows = reference
    if len(rows) > LOSS_ROWS:
        rows = rows[np.sort(np.random.default_rng(0).choice(len(rows), LOSS_ROWS, replace=False))]
    residual = rows[:, 1] - rows[:, 0]
    loss = np.abs(residual) if metric == "mae" else residual**2
    X = np.column_stack([rows[:, 0], rows[:, 2:]])
    return HistGradientBoostingRegressor(max_iter=100, random_state=0).fit(X, loss)


def calibrate(scores: np.ndarray, truth: np.ndarray) -> Any:
    """Score → the probability that the row is positive, learnt on the reference (isotonic: monotone, no shape)."""
    from sklearn.isotonic import IsotonicRegression  # here, not at import: every client imports this module

    keys, inverse, counts = np.unique(np.round(scores, CALIBRATION_DECIMALS), return_inverse=True, return_counts=True)
    rates = np.bincount(inverse, weights=truth) / counts  # one point per distinct score: the same fit, far fewer
    model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(keys, rates, sample_weight=counts)
    return model.predict


def estimate_metric(metric: str, scores: np.ndarray, calibrated: np.ndarray) -> float:
    """The expected `metric` of rows with these scores and calibrated probabilities."""
    if metric == "roc_auc":
        return _expected_roc_auc(scores, calibrated)
    positive = scores >= THRESHOLD
    tp = float(calibrated[positive].sum())
    fp = float((1 - calibrated[positive]).sum())
    fn = float(calibrated[~positive].sum())
    tn = float((1 - calibrated[~positive]).sum())
    if metric == "accuracy":
        return (tp + tn) / len(scores)
    if metric == "precision":
        return tp / (tp + fp) if tp + fp else float("nan")
    if metric == "recall":
        return tp / (tp + fn) if tp + fn else float("nan")
    return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else float("nan")


def _expected_roc_auc(scores: np.ndarray, calibrated: np.ndarray) -> float:
    """The area under the expected ROC curve: each row, taken in falling score order, adds its calibrated
    probability to the true positives and the rest to the false ones (tied scores move together)."""
    order = np.argsort(-scores, kind="stable")
    s, p = scores[order], calibrated[order]
    tps, fps = np.cumsum(p), np.cumsum(1 - p)
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the end of each run of tied scores
    if not len(s) or tps[-1] == 0 or fps[-1] == 0:
        return float("nan")
    tpr = np.r_[0.0, tps[last] / tps[-1]]
    fpr = np.r_[0.0, fps[last] / fps[-1]]
    return float(np.trapezoid(tpr, fpr))


def sampling_error(metric: str, estimate: float, scores: np.ndarray, calibrated: np.ndarray) -> float:
    """The standard error of `metric` over a window of this many rows: binomial for the rates (over the rows each
    counts: all of them, the predicted positives, the expected positives), Hanley and McNeil's for ROC AUC."""
    n = len(calibrated)
    if not n or not np.isfinite(estimate):
        return float("nan")
    positives = float(calibrated.sum())
    if metric == "roc_auc":
        negatives = n - positives
        if positives < 1 or negatives < 1:
            return float("nan")
        q1, q2 = estimate / (2 - estimate), 2 * estimate**2 / (1 + estimate)
        variance = (
            estimate * (1 - estimate) + (positives - 1) * (q1 - estimate**2) + (negatives - 1) * (q2 - estimate**2)
        ) / (positives * negatives)
        return float(np.sqrt(max(variance, 0.0)))
    counted = {"precision": float((scores >= THRESHOLD).sum()), "recall": positives}.get(metric, float(n))
    return float(np.sqrt(estimate * (1 - estimate) / max(counted, 1.0)))
