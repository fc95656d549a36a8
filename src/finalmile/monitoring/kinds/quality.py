"""Data quality: one logged column's nulls, values outside the baseline's range, categories the baseline never had,
and values of another type than the baseline's — each the share of a window's rows, with examples as evidence."""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.base import ColumnKind

CHECKS = ("null_rate", "out_of_range", "unseen_category", "type_change")
EXAMPLES = 10
"""Offending values kept as a window's evidence, for the person who reads the alert."""


class DataQualityKind(ColumnKind):
    """`check` (stored as the metric): null_rate, out_of_range, unseen_category or type_change of `column`."""

    name = "data_quality"

    def check(self, config: MonitorConfig) -> list[str]:
        if config.metric not in CHECKS:
            return [f"check: unknown data-quality check {config.metric!r}; use {', '.join(CHECKS)}"]
        if not config.column:
            return ["column: a data-quality monitor needs the logged column it checks"]
        if self.needs_baseline(config) and config.baseline is None:
            return [f"baseline: the {config.metric} check compares with a baseline (training data, a log range or a "
                    "model's sample)"]  # fmt: skip
        return []

    def needs_baseline(self, config: MonitorConfig) -> bool:
        return config.metric != "null_rate"

    def score(
        self, config: MonitorConfig, table: pa.Table, rows: np.ndarray, baseline: np.ndarray | None
    ) -> tuple[float | None, dict[str, Any]]:
        column = table.column("value").take(pa.array(rows))
        if len(column) == 0:
            return None, {}
        missing = pc.is_null(column, nan_is_null=True)
        if config.metric == "null_rate":
            nulls = int(pc.sum(missing).as_py() or 0)
            return nulls / len(column), {"nulls": nulls, "rows": len(column)}
        present = column.filter(pc.invert(missing))
        if len(present) == 0:
            return None, {"rows": 0}
        assert baseline is not None
        kind = _arrow_kind(present.type)
        if config.metric == "out_of_range":
            numbers = np.asarray(baseline, dtype=np.float64)
            low, high = float(np.nanmin(numbers)), float(np.nanmax(numbers))
            bad = pc.or_(pc.less(present, low), pc.greater(present, high)) if kind == "number" else None
            evidence: dict[str, Any] = {"range": [low, high]}
        elif config.metric == "unseen_category":
            seen = categories(baseline)
            bad = pc.invert(pc.is_in(present.cast(pa.string()), value_set=seen))
            evidence = {"categories": len(seen)}
        else:
            expected = _kind_of(baseline)
            bad = pa.array(np.full(len(present), kind != expected))
            evidence = {"expected": expected}
        offending = present.filter(bad) if bad is not None else present.slice(0, 0)
        examples = sorted({str(v) for v in pc.unique(offending).slice(0, 1000).to_pylist()})[:EXAMPLES]
        return len(offending) / len(present), evidence | {
            "offending": len(offending), "rows": len(present), "examples": examples}  # fmt: skip


def categories(baseline: np.ndarray) -> pa.Array:
    """The baseline's distinct values as text, written as Arrow writes the window's (`cast` to string: a logged 1 or
    1.0 is "1", a boolean "true"), so a value counts as unseen only when the baseline never had it. Arrow reads the
    whole column at once; a column of mixed types is read value by value, and cast once per distinct value."""
    try:
        values = pa.array(baseline, from_pandas=True)  # None and NaN are nulls: never a category
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        items = baseline.tolist()  # distinct by type too: True is not 1 here (Arrow prints "true" and "1")
        distinct = [v for _, v in dict.fromkeys(zip(map(type, items), items, strict=True)) if v is not None and v == v]
        values = pa.array([pa.scalar(v).cast(pa.string()).as_py() for v in distinct], pa.string())
    return pc.unique(values.cast(pa.string())).drop_null()


def _arrow_kind(kind: pa.DataType) -> str:
    """What a logged column holds, by its type (a column has one: the log's view unifies its parts)."""
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "number"
    return "text" if pa.types.is_string(kind) or pa.types.is_large_string(kind) else str(kind)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    return "number" if _number(value) else "text" if isinstance(value, str) else type(value).__name__


_ONE_KIND = {pa.string(): "text", pa.bool_(): "boolean", pa.int64(): "number", pa.float64(): "number"}
"""What Arrow reads Python values of one kind as (nulls aside); any other type is judged value by value."""


def _kind_of(baseline: np.ndarray) -> str:
    """The baseline's type: the kind most of its values have (Arrow's type where all have one, read at once)."""
    if baseline.dtype != object:
        return "number"
    try:
        kind = _ONE_KIND.get(pa.array(baseline).type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        kind = None
    if kind is not None:
        return kind
    kinds = [_kind(v) for v in baseline if v is not None]
    return max(set(kinds), key=kinds.count) if kinds else "text"
