"""The Runtime protocol and the helpers every framework module shares.

A runtime loads one model version once and predicts on Arrow tables. Output names are the same whatever the
framework:

- classifier: `label` (the class with the highest probability), `probabilities` (one float64 per class, in the
  order of the version's `classes`) and, for a binary classifier, `score` (the probability of the second class,
  the "positive" one);
- regressor: `prediction` (float64);
- anything else (PyTorch, Python, MLflow, a raw ONNX graph): the model's own output names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import arrow_values, list_matrix, tensor_array
from finalmile.config import FinalmileSettings
from finalmile.errors import PredictionError
from finalmile.schema import Column, Schema, SchemaValidator, expand_tensor

CLASSIFICATION = "classification"
REGRESSION = "regression"


@dataclass
class Packaged:
    """A source turned into what the registry stores: an artifact on disk and what we learnt from the model."""

    framework: str
    artifact: Path
    schema: Schema
    task: str | None = None
    classes: list[Any] | None = None
    native: Any = None
    """The loaded native model, kept for ONNX conversion so it is not loaded twice."""


@dataclass
class RuntimeContext:
    """Everything a runtime needs to load: where the artifact is and what the registry knows of it."""

    artifact: Path
    schema: Schema
    task: str | None
    classes: list[Any] | None
    settings: FinalmileSettings


class Runtime(Protocol):
    """What every framework's runtime does: load once, predict Arrow to Arrow, unload."""

    schema: Schema
    ready: bool

    def load(self) -> None: ...

    def predict(self, table: pa.Table) -> pa.Table: ...

    def unload(self) -> None: ...


class BaseRuntime:
    """Keeps the context, validates inputs and maps model failures to `PredictionError`.

    Subclasses implement `_load()` and `_predict(table)`; `table` has already been conformed to the schema.
    """

    framework = "base"
    needs_named_columns = False
    """True for runtimes that hand the model a DataFrame (it reads columns by name), not a matrix."""

    def __init__(self, context: RuntimeContext) -> None:
        self.context = context
        self.schema = context.schema
        self.ready = False
        self._validator = SchemaValidator(context.schema)

    def load(self) -> None:
        if not self.ready:
            self._load()
            self.ready = True

    def unload(self) -> None:
        self.ready = False

    def predict(self, table: pa.Table) -> pa.Table:
        if not self.ready:
            self.load()
        conformed = self._validator.conform(table)
        if self.needs_named_columns and self._validator.is_tensor_form(conformed):
            conformed = expand_tensor(conformed, self.schema)
        try:
            return self._predict(conformed)
        except PredictionError:
            raise
        except Exception as exc:  # the model's own failure, not ours: report it as such
            raise PredictionError(f"{self.framework} model failed: {type(exc).__name__}: {exc}") from exc

    def contributions(self, table: pa.Table) -> pa.Table:
        """Each feature's exact contribution to each row's output (`runtimes.explain`); NotImplementedError where
        the model offers none (then explanations are model-agnostic)."""
        if not self.ready:
            self.load()
        return self._contributions(self._validator.conform(table))

    def _load(self) -> None:
        raise NotImplementedError

    def _predict(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError

    def _contributions(self, table: pa.Table) -> pa.Table:
        raise NotImplementedError(f"{self.framework} models have no exact contributions")

    def _binary(self) -> bool:
        return self.context.task == CLASSIFICATION and len(self.context.classes or []) == 2


def features(table: pa.Table, dtype: Any = np.float32, nulls: bool = True) -> np.ndarray:
    """The table as one 2-D (or n-d, for a single tensor column) numpy array for models that take a matrix.

    A single fixed-size-list column is viewed without a copy; scalar columns go through Arrow's own row-major
    tensor conversion (one C++ call, where stacking columns one by one costs microseconds per column).
    Nulls become NaN, or with `nulls=False` an `ArrowTypeError` (for callers that must refuse them).
    """
    if table.num_columns == 1 and pa.types.is_fixed_size_list(table.schema.field(0).type):
        return list_matrix(table.column(0)).astype(dtype, copy=False)
    batches = table.to_batches()
    if len(batches) != 1:
        batches = table.combine_chunks().to_batches()
    if not batches:  # an empty table has no batch at all
        return np.empty((0, table.num_columns), dtype=dtype)
    return np.asarray(batches[0].to_tensor(null_to_nan=nulls, row_major=True)).astype(dtype, copy=False)


def classification_table(
    classes: np.ndarray, probabilities: np.ndarray | None, labels: np.ndarray | None = None
) -> pa.Table:
    """`label`, `probabilities` and (binary) `score` columns; `label` is the argmax unless given."""
    if probabilities is None:
        assert labels is not None
        return pa.Table.from_arrays([pa.array(labels)], names=["label"])
    proba = probabilities.astype(np.float64, copy=False)
    if labels is None:
        labels = classes[proba.argmax(axis=1)]
    if proba.shape[1] == 2:
        return pa.Table.from_arrays(
            [arrow_values(labels), tensor_array(proba), arrow_values(proba[:, 1].copy())], names=_BINARY_OUTPUTS
        )
    return pa.Table.from_arrays([arrow_values(labels), tensor_array(proba)], names=_BINARY_OUTPUTS[:2])


_BINARY_OUTPUTS = ["label", "probabilities", "score"]


def regression_table(prediction: np.ndarray) -> pa.Table:
    return pa.Table.from_arrays([arrow_values(np.asarray(prediction, dtype=np.float64).reshape(-1))], ["prediction"])


def standard_outputs(task: str | None, classes: list[Any] | None, has_probabilities: bool = True) -> list[Column]:
    """The documented output columns of a classifier or regressor."""
    if task == REGRESSION:
        return [Column(name="prediction", dtype="float64")]
    if task == CLASSIFICATION and classes is not None:
        label_dtype = "string" if any(isinstance(c, str) for c in classes) else "int64"
        cols = [Column(name="label", dtype=label_dtype)]
        if has_probabilities:
            cols.append(Column(name="probabilities", dtype="float64", shape=(len(classes),)))
            if len(classes) == 2:
                cols.append(Column(name="score", dtype="float64"))
        return cols
    return []


def outputs_to_table(result: Any, n_rows: int, default_name: str = "prediction") -> pa.Table:
    """Whatever a free-form model returned (DataFrame, Series, dict, array, list, tuple) as an Arrow table."""
    if isinstance(result, pa.Table):
        table = result
    elif isinstance(result, dict):
        table = pa.table({str(k): _column(v) for k, v in result.items()})
    elif type(result).__module__.split(".")[0] == "pandas":
        import pandas as pd

        if isinstance(result, pd.Series):
            table = pa.table({str(result.name or default_name): _column(result.to_numpy())})
        else:
            table = pa.Table.from_pandas(result, preserve_index=False)
    elif type(result).__module__.split(".")[0] == "polars":
        table = result.to_arrow() if hasattr(result, "to_arrow") else pa.table({default_name: result.to_numpy()})
    elif isinstance(result, tuple):
        table = pa.table({f"{default_name}_{i}": _column(v) for i, v in enumerate(result)})
    else:
        table = pa.table({default_name: _column(result)})
    if table.num_rows != n_rows:
        raise PredictionError(f"the model returned {table.num_rows} rows for {n_rows} input rows")
    return table


def _column(values: Any) -> pa.Array:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim > 1:
        return tensor_array(arr)
    return pa.array(arr)
