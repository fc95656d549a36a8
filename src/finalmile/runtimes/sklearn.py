"""scikit-learn estimators and pipelines, stored with joblib; converted to ONNX at upload when outputs match."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.base import BaseEstimator, is_classifier, is_regressor

from finalmile.errors import InvalidModelError
from finalmile.runtimes import load_pickle
from finalmile.runtimes.base import (
    CLASSIFICATION,
    REGRESSION,
    BaseRuntime,
    Packaged,
    classification_table,
    features,
    outputs_to_table,
    regression_table,
    standard_outputs,
)
from finalmile.runtimes.explain import tree_contributions
from finalmile.schema import Column, Schema

FRAMEWORK = "sklearn"


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    if isinstance(source, (str, Path)):
        path = Path(source)
        model = load_pickle(path)
    else:
        model = source
        path = workdir / "model.joblib"
        joblib.dump(model, path)
    if not isinstance(model, BaseEstimator) or not callable(getattr(model, "predict", None)):
        raise InvalidModelError(f"a {type(model).__name__} is not a scikit-learn estimator with predict()")
    task, classes = describe(model)
    schema = Schema(
        inputs=tabular_inputs(_feature_names(model), getattr(model, "n_features_in_", None), sample),
        outputs=standard_outputs(task, classes, hasattr(model, "predict_proba")),
    )
    return Packaged(FRAMEWORK, path, schema, task, classes, native=model)


def describe(model: Any) -> tuple[str | None, list[Any] | None]:
    if is_classifier(model):
        return CLASSIFICATION, np.asarray(model.classes_).tolist()
    if is_regressor(model):
        return REGRESSION, None
    return None, None


def _feature_names(model: Any) -> list[str] | None:
    names = getattr(model, "feature_names_in_", None)
    return None if names is None else [str(n) for n in names]


def tabular_inputs(names: list[str] | None, n_features: int | None, sample: pa.Table | None) -> list[Column] | None:
    """Input columns of a model that takes a feature matrix.

    The model's own feature names win; unnamed features are called f0, f1, … (XGBoost's convention). Types come
    from the sample where it has the column, float64 otherwise (which accepts any int or float input safely).
    """
    if names is None and n_features is not None:
        names = [f"f{i}" for i in range(n_features)]
    if names is None:
        if sample is None:
            return None
        names = sample.column_names
    sample_types = {} if sample is None else {f.name: f.type for f in sample.schema}
    gaps = set() if sample is None else {n for n in sample.column_names if sample.column(n).null_count}
    columns = []
    for name in names:
        t = sample_types.get(name)
        dtype = "float64"
        if t is not None and not (pa.types.is_floating(t) or pa.types.is_integer(t)):
            dtype = "string" if pa.types.is_string(t) or pa.types.is_large_string(t) else "float64"
        elif t is not None and pa.types.is_floating(t):
            dtype = "float32" if pa.types.is_float32(t) else "float64"
        columns.append(Column(name=name, dtype=dtype, nullable=name in gaps))
    return columns


class SklearnRuntime(BaseRuntime):
    """scikit-learn's own predict, for models that did not convert."""

    framework = FRAMEWORK

    def _load(self) -> None:
        self.model = joblib.load(self.context.artifact)
        self._named = _feature_names(self.model) is not None
        self._classes = np.asarray(self.context.classes) if self.context.classes is not None else None
        self._proba = callable(getattr(self.model, "predict_proba", None))

    def _matrix(self, table: pa.Table) -> Any:
        if not self._named:
            return features(table, np.float64)
        # A model fitted on a DataFrame checks the column names (and may select columns by name): give it one.
        if self._validator.is_tensor_form(table):
            return pd.DataFrame(features(table, np.float64), columns=self.schema.input_names())
        return table.to_pandas()

    def _predict(self, table: pa.Table) -> pa.Table:
        X = self._matrix(table)
        if self.context.task == CLASSIFICATION and self._classes is not None:
            if self._proba:
                return classification_table(self._classes, self.model.predict_proba(X))
            return classification_table(self._classes, None, labels=self.model.predict(X))
        if self.context.task == REGRESSION:
            return regression_table(self.model.predict(X))
        return outputs_to_table(self.model.predict(X), table.num_rows)

    def _contributions(self, table: pa.Table) -> pa.Table:
        """`shap`'s exact tree SHAP for tree models, on the positive class's probability or the prediction."""
        if self.context.task == CLASSIFICATION and not self._binary():
            raise NotImplementedError("multiclass")
        return tree_contributions(self.model, self._matrix(table), self.schema.input_names(), self._binary())
