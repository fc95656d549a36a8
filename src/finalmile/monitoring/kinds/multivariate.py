"""Drift across columns together: what no single column's distribution shows, such as a change in how two columns
move together.

`pca`: the baseline's columns are standardised and reduced to the principal components that explain 65% of their
variance; a window's score is the mean error of reconstructing its rows from those components. Rows that keep the
baseline's correlations reconstruct as well as the baseline does; rows that break them do not. The alert threshold
defaults to the baseline's own mean error plus three standard deviations over ten chunks of it.
`classifier`: a gradient-boosted classifier learns to tell the window's rows from the baseline's (on a sample of
each); the score is its cross-validated ROC AUC — 0.5 when it cannot, towards 1 when the data changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import MonitorKind, fitted_once, matrix, quote

METHODS = ("pca", "classifier")
EXPLAINED = 0.65
"""The share of the baseline's variance the kept components explain (NannyML's default)."""
CHUNKS = 10
BLOCK_ROWS = 65_536
CLASSIFIER_ROWS = 20_000
"""Rows drawn from each of the baseline and the window for the classifier (seeded): its AUC needs no more."""
CLASSIFIER_ALERT = 0.65


class MultivariateDriftKind(MonitorKind):
    """`method` (stored as the metric) pca or classifier, over the logged `columns` against the baseline's."""

    name = "multivariate_drift"
    reference = "columns"

    def check(self, config: MonitorConfig) -> list[str]:
        if config.metric not in METHODS:
            return [f"method: unknown multivariate drift method {config.metric!r}; use {', '.join(METHODS)}"]
        if not config.columns or len(config.columns) < 2:
            return ["columns: a multivariate drift monitor watches two or more logged columns"]
        if config.baseline is None:
            return ["baseline: multivariate drift compares with a baseline (training data, a log range or a model's "
                    "sample)"]  # fmt: skip
        return []

    def needs_baseline(self, config: MonitorConfig) -> bool:
        return True

    def default_alert(self, config: MonitorConfig, baseline: np.ndarray) -> float:
        """Where an alert starts when the monitor names no threshold: above the baseline's own chunks' spread."""
        return fit_pca(baseline).band()["upper"] if config.metric == "pca" else CLASSIFIER_ALERT

    def select(self, config: MonitorConfig) -> tuple[str, list[str]]:
        chosen = ", ".join(
            f"CAST(l.{quote(c)} AS DOUBLE) AS {quote(f'c{i}')}" for i, c in enumerate(config.columns or [])
        )
        return chosen, ["l.status = 'ok'"]

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        assert baseline is not None and baseline.ndim == 2
        contiguous = len(rows) > 0 and rows[-1] - rows[0] == len(rows) - 1
        chosen = table.slice(int(rows[0]), len(rows)) if contiguous else table.take(pa.array(rows))
        chosen = chosen.select([f"c{i}" for i in range(baseline.shape[1])])
        if config.metric == "classifier":
            window = matrix(chosen, complete=True)
            return (domain_auc(baseline, window), {"method": "classifier", "rows": len(window)}) if len(window) else (
                None, {})  # fmt: skip
        fitted = fit_pca(baseline)
        total, count = 0.0, 0
        for batch in chosen.to_batches():  # a batch at a time: the window is never copied whole
            block = matrix(pa.Table.from_batches([batch]), complete=True)
            total, count = total + float(fitted.row_errors(block).sum()), count + len(block)
        if not count:
            return None, {}
        return total / count, {"method": "pca", "components": fitted.components.shape[0]} | fitted.band()


@dataclass
class Fitted:
    """PCA fitted on a baseline: its scaling, kept components, and the spread of its own chunks' errors."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    chunk_errors: np.ndarray

    def row_errors(self, rows: np.ndarray) -> np.ndarray:
        """Each row's distance from its reconstruction: |z|² less the part the kept (orthonormal) components hold;
        in blocks, so the standardised copy stays small whatever the rows."""
        out = np.empty(len(rows))
        for at in range(0, len(rows), BLOCK_ROWS):
            z = (rows[at : at + BLOCK_ROWS] - self.mean) / self.scale
            kept = z @ self.components.T
            out[at : at + BLOCK_ROWS] = np.einsum("ij,ij->i", z, z) - np.einsum("ij,ij->i", kept, kept)
        return np.sqrt(np.maximum(out, 0.0))

    def band(self) -> dict[str, float]:
        mean, sd = float(self.chunk_errors.mean()), float(self.chunk_errors.std())
        return {"baseline_error": mean, "lower": mean - 3 * sd, "upper": mean + 3 * sd}


def fit_pca(baseline: np.ndarray) -> Fitted:
    """PCA of the baseline by the eigenvectors of its correlation matrix (a 29 × 29 problem however many rows),
    fitted once per baseline (`fitted_once`)."""
    return fitted_once("pca", baseline, _fit_pca)


def _fit_pca(baseline: np.ndarray) -> Fitted:
    finite = complete_rows(baseline)
    mean = finite.mean(axis=0)
    # the covariance from one matrix product (X'X/n − mean·mean'): one BLAS pass over the rows, where a centred,
    # scaled copy of them costs ten times as much; float64 keeps ~8 significant digits even where a column's mean is
    # 10⁴ times its spread
    covariance = finite.T @ finite / len(finite) - np.outer(mean, mean)
    scale = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    scale[scale == 0] = 1.0
    values, vectors = np.linalg.eigh(covariance / np.outer(scale, scale))
    order = np.argsort(values)[::-1]
    share = np.cumsum(values[order]) / values.sum()
    kept = int(np.searchsorted(share, EXPLAINED) + 1)
    fitted = Fitted(mean, scale, vectors[:, order[:kept]].T, np.zeros(1))
    errors = fitted.row_errors(finite)
    chunks = np.array_split(errors, CHUNKS) if len(errors) >= CHUNKS else [errors]
    fitted.chunk_errors = np.array([c.mean() for c in chunks])
    return fitted


def complete_rows(rows: np.ndarray) -> np.ndarray:
    """The rows without a missing or infinite value (a row's sum is finite only when all of its values are: one
    pass, where `isfinite(...).all(axis=1)` makes a boolean copy of the whole matrix)."""
    complete = np.isfinite(rows.sum(axis=1))
    return rows if complete.all() else rows[complete]


def domain_auc(baseline: np.ndarray, window: np.ndarray, seed: int = 0) -> float:
    """The cross-validated ROC AUC of a classifier telling the window's rows from the baseline's."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # here, not at import: clients import this module
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    base = complete_rows(baseline)
    parts = [p[rng.choice(len(p), min(len(p), CLASSIFIER_ROWS), replace=False)] for p in (base, window)]
    X = np.vstack(parts)
    y = np.r_[np.zeros(len(parts[0])), np.ones(len(parts[1]))]
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=seed)
    return float(cross_val_score(model, X, y, cv=folds, scoring="roc_auc").mean())
