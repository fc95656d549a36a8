"""Model performance against ground truth, per window: scikit-learn's metrics over the joined rows."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
from sklearn import metrics


def performance_score(
    metric: str, truth: np.ndarray, predicted: pa.ChunkedArray | pa.Array
) -> tuple[float, dict[str, Any]]:
    """`metric` of the logged predictions against the true values; the classes seen are part of the evidence."""
    if metric in ("rmse", "mae", "r2"):
        y, p = truth.astype(np.float64), predicted.to_numpy().astype(np.float64)
        if metric == "rmse":
            return float(np.sqrt(metrics.mean_squared_error(y, p))), {}
        if metric == "mae":
            return float(metrics.mean_absolute_error(y, p)), {}
        return float(metrics.r2_score(y, p)), {}
    labels = _labels(truth)
    if metric in ("roc_auc", "log_loss"):
        score = predicted.to_numpy().astype(np.float64)
        classes = np.unique(labels)
        evidence = {"classes": classes.tolist()}
        if len(classes) < 2:
            return float("nan"), evidence | {"note": "only one class in the window"}
        positive = (labels == classes[-1]).astype(int)
        if metric == "roc_auc":
            return float(metrics.roc_auc_score(positive, score)), evidence
        return float(metrics.log_loss(positive, score, labels=[0, 1])), evidence
    p = _labels(np.asarray(predicted.to_pylist(), dtype=object))
    if labels.dtype != p.dtype:
        labels, p = labels.astype(str), p.astype(str)
    classes = np.unique(np.concatenate([labels, p]))
    evidence = {"classes": classes.tolist()}
    if metric == "accuracy":
        return float(metrics.accuracy_score(labels, p)), evidence
    average = "binary" if len(classes) == 2 else "macro"
    kwargs: dict[str, Any] = {"average": average, "zero_division": 0}
    if average == "binary":
        kwargs["pos_label"] = classes[-1]
    scorer = {"precision": metrics.precision_score, "recall": metrics.recall_score, "f1": metrics.f1_score}[metric]
    return float(scorer(labels, p, **kwargs)), evidence | {"average": average}


def _labels(values: np.ndarray) -> np.ndarray:
    """Integral floats (labels that went through a float column) back to integers; text stays text."""
    if values.dtype == object:
        try:
            values = values.astype(np.float64)
        except (TypeError, ValueError):
            return values.astype(str)
    if np.all(np.isfinite(values)) and np.all(values == np.round(values)):
        return values.astype(np.int64)
    return values
