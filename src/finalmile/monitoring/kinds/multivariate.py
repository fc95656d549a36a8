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

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import Condense, MonitorKind, fitted_once, matrix, quote

METHODS = ("pca", "classifier")
EXPLAINED = 0.65
"""The share of the baseline's variance the kept components explain (NannyML's default)."""
CHUNKS = 10
BLOCK_ROWS = 8_192
"""Rows per block the PCA works on: a block's working copies (2 MB) stay in cache (65,536-row blocks: ~1.6× slower)."""
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

    def condense(self, config: MonitorConfig, baseline: np.ndarray | None) -> Condense | None:
        """The PCA keeps each row's reconstruction error (NaN for an incomplete row) instead of its columns."""
        if config.metric != "pca" or baseline is None:
            return None
        fitted = fit_pca(baseline)
        watched = [f"c{i}" for i in range(baseline.shape[1])]

        def errors(batch: pa.RecordBatch) -> pa.RecordBatch:
            found = fitted.all_row_errors([column_values(batch.column(c)) for c in watched])
            rest = [c for c in batch.schema.names if c not in watched]
            return pa.RecordBatch.from_arrays([*(batch.column(c) for c in rest), pa.array(found)], [*rest, "error"])

        return errors

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        assert baseline is not None and baseline.ndim == 2
        contiguous = len(rows) > 0 and rows[-1] - rows[0] == len(rows) - 1
        chosen = table.slice(int(rows[0]), len(rows)) if contiguous else table.take(pa.array(rows))
        if config.metric == "classifier":
            window = matrix(chosen.select([f"c{i}" for i in range(baseline.shape[1])]), complete=True)
            return (domain_auc(baseline, window), {"method": "classifier", "rows": len(window)}) if len(window) else (
                None, {})  # fmt: skip
        errors = column_values(chosen.column("error"))
        errors = errors[np.isfinite(errors)]  # an incomplete row has none
        total, count = float(errors.sum()), len(errors)
        fitted = fit_pca(baseline)
        if not count:
            return None, {}
        return total / count, {"method": "pca", "components": fitted.components.shape[0]} | fitted.band()


@dataclass
class Fitted:
    """PCA fitted on a baseline: its scaling, kept components, and the spread of its own chunks' errors."""

    mean: np.ndarray
    scale: np.ndarray
    components: np.ndarray
    residual: np.ndarray
    """The discarded components, divided by each column's scale (columns × discarded): a row's error is the length of
    its centred row's projection on them, `|x·R − mean·R|`, which is |z|² less what the kept components hold."""
    chunk_errors: np.ndarray

    def row_errors(self, rows: np.ndarray) -> np.ndarray:
        """Each row's distance from its reconstruction, NaN or infinite for a row with a missing or infinite value
        (it propagates through the product). One product of the block with `residual`, where centring and scaling a
        copy of the block first cost as much again. Give it a block of rows at a time (`blocks`): its working copies
        are the block's size."""
        if not self.residual.shape[1]:  # every component kept: nothing is lost but the incomplete rows
            return np.where(np.isfinite(rows.sum(axis=1)), 0.0, np.nan)
        lost = rows @ self.residual
        lost -= self.mean @ self.residual
        return np.sqrt(np.einsum("ij,ij->i", lost, lost))

    def all_row_errors(self, columns: list[np.ndarray]) -> np.ndarray:
        """`row_errors` of every row of these equal-length columns, NaN for a row with a missing value."""
        out = np.empty(len(columns[0]) if columns else 0)
        for at, _, block in blocks(columns, check=False):
            out[at : at + len(block)] = self.row_errors(block)
        out[~np.isfinite(out)] = np.nan
        return out

    def band(self) -> dict[str, float]:
        mean, sd = float(self.chunk_errors.mean()), float(self.chunk_errors.std())
        return {"baseline_error": mean, "lower": mean - 3 * sd, "upper": mean + 3 * sd}


def fit_pca(baseline: np.ndarray) -> Fitted:
    """PCA of the baseline by the eigenvectors of its correlation matrix (a 29 × 29 problem however many rows),
    fitted once per baseline (`fitted_once`)."""
    return fitted_once("pca", baseline, _fit_pca)


def _fit_pca(baseline: np.ndarray) -> Fitted:
    columns = [baseline[:, i] for i in range(baseline.shape[1])]
    parts = [(len(b) if c is None else int(c.sum()), b.sum(axis=0), b.T @ b) for _, c, b in blocks(columns)]
    count = max(sum(n for n, _, _ in parts), 1)
    mean: np.ndarray = sum((t for _, t, _ in parts), np.zeros(baseline.shape[1])) / count
    product: np.ndarray = sum((p for _, _, p in parts), np.zeros((baseline.shape[1],) * 2))
    # the covariance from X'X (X'X/n − mean·mean'): one BLAS product per block, where a centred, scaled copy of the
    # rows costs ten times as much; float64 keeps ~8 significant digits even where a column's mean is 10⁴ times its
    # spread
    covariance = product / count - np.outer(mean, mean)
    scale = np.sqrt(np.maximum(np.diag(covariance), 0.0))
    scale[scale == 0] = 1.0
    values, vectors = np.linalg.eigh(covariance / np.outer(scale, scale))
    order = np.argsort(values)[::-1]
    share = np.cumsum(values[order]) / values.sum()
    kept = int(np.searchsorted(share, EXPLAINED) + 1)
    residual = vectors[:, order[kept:]] / scale[:, None]
    fitted = Fitted(mean, scale, vectors[:, order[:kept]].T, residual, np.zeros(1))
    errors = fitted.all_row_errors(columns)
    errors = errors[np.isfinite(errors)]
    chunks = np.array_split(errors, CHUNKS) if len(errors) >= CHUNKS else [errors]
    fitted.chunk_errors = np.array([c.mean() for c in chunks])
    return fitted


def column_values(column: pa.Array) -> np.ndarray:
    """A numeric column as float64 (NaN where null), without a copy where Arrow holds it as such."""
    return column.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def blocks(columns: list[np.ndarray], check: bool = True) -> Iterator[tuple[int, np.ndarray | None, np.ndarray]]:
    """These equal-length columns `BLOCK_ROWS` rows at a time: where the block starts, which of its rows are complete
    (every value finite; None: all are, or `check` is off) and the block, a column-major matrix in one buffer that
    the next block reuses (use it before asking for the next), where an incomplete row holds zeros when `check`ed
    (it adds nothing to a sum; its other results are the caller's to drop). Nothing the size of the whole matrix is
    made: on these VMs a fresh 232 MB array costs ~0.4 s of page faults, more than all the arithmetic done on it,
    where a block's 2 MB stays in cache. (A thread per core did not help: the per-block numpy calls hold the GIL
    about as long as the arithmetic lets it go.)"""
    rows = len(columns[0]) if columns else 0
    buffer = np.empty((min(rows, BLOCK_ROWS), len(columns)), order="F")
    for at in range(0, rows, BLOCK_ROWS):
        block = buffer[: min(BLOCK_ROWS, rows - at)]
        for i, column in enumerate(columns):
            block[:, i] = column[at : at + len(block)]
        finite = np.isfinite(block.sum(axis=1)) if check else None  # finite only when all of the row's values are
        if finite is None or finite.all():
            yield at, None, block
        else:
            block[~finite] = 0.0
            yield at, finite, block


def complete_mask(rows: np.ndarray) -> np.ndarray:
    """Which rows have no missing or infinite value (a row's sum is finite only when all of its values are: one
    pass, where `isfinite(...).all(axis=1)` makes a boolean copy of the whole matrix)."""
    return np.isfinite(rows.sum(axis=1))


def domain_auc(baseline: np.ndarray, window: np.ndarray, seed: int = 0) -> float:
    """The cross-validated ROC AUC of a classifier telling the window's rows from the baseline's."""
    from sklearn.ensemble import HistGradientBoostingClassifier  # here, not at import: clients import this module
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    rng = np.random.default_rng(seed)
    complete = np.flatnonzero(complete_mask(baseline))  # the baseline keeps incomplete rows: drawn from the rest
    base = baseline[np.sort(rng.choice(complete, min(len(complete), CLASSIFIER_ROWS), replace=False))]
    parts = [base, window[rng.choice(len(window), min(len(window), CLASSIFIER_ROWS), replace=False)]]
    X = np.vstack(parts)
    y = np.r_[np.zeros(len(parts[0])), np.ones(len(parts[1]))]
    folds = StratifiedKFold(3, shuffle=True, random_state=seed)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=seed)
    return float(cross_val_score(model, X, y, cv=folds, scoring="roc_auc").mean())
