"""LightGBM boosters (from the sklearn wrapper, a Booster, or a saved .txt model)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidModelError
from finalmile.runtimes.base import (
    CLASSIFICATION,
    REGRESSION,
    BaseRuntime,
    Packaged,
    classification_table,
    features,
    regression_table,
    standard_outputs,
)
from finalmile.runtimes.explain import contribution_table
from finalmile.runtimes.sklearn import tabular_inputs
from finalmile.schema import Schema

FRAMEWORK = "lightgbm"


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    classes: list[Any] | None = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        booster = load_booster(path.read_text(errors="replace"), str(path))
    else:
        booster = source.booster_ if hasattr(source, "booster_") else source
        if not isinstance(booster, lgb.Booster):
            raise InvalidModelError(f"a {type(source).__name__} is not a LightGBM model")
        if hasattr(source, "classes_"):  # the sklearn wrapper encodes labels; the booster only knows indices
            classes = np.asarray(source.classes_).tolist()
        path = workdir / "model.txt"
        path.write_text(booster.model_to_string())
    objective = booster.dump_model(num_iteration=0)["objective"].split()[0]
    task = CLASSIFICATION if objective in ("binary", "multiclass", "multiclassova") else REGRESSION
    if task == CLASSIFICATION and classes is None:
        n = booster.num_model_per_iteration()
        classes = [0, 1] if n == 1 else list(range(n))
    names: list[str] | None = booster.feature_name()
    if names == [f"Column_{i}" for i in range(len(names or []))]:  # LightGBM's names for unnamed features
        names = None
    schema = Schema(
        inputs=tabular_inputs(names, booster.num_feature(), sample),
        outputs=standard_outputs(task, classes),
    )
    return Packaged(FRAMEWORK, path, schema, task, classes, native=booster)


def load_booster(text: str, where: str) -> lgb.Booster:
    try:
        return lgb.Booster(model_str=text)
    except lgb.basic.LightGBMError as exc:
        raise InvalidModelError(f"{where}: not a readable LightGBM model ({str(exc).splitlines()[0]})") from None


class LightGBMRuntime(BaseRuntime):
    """LightGBM's own predictor (faster than ONNX Runtime on large batches)."""

    framework = FRAMEWORK

    def _load(self) -> None:
        self.booster = load_booster(self.context.artifact.read_text(), str(self.context.artifact))
        self._classes = np.asarray(self.context.classes) if self.context.classes is not None else None

    def _predict(self, table: pa.Table) -> pa.Table:
        raw = np.asarray(self.booster.predict(features(table, np.float64)))
        if self.context.task == CLASSIFICATION and self._classes is not None:
            proba = np.column_stack([1.0 - raw, raw]) if raw.ndim == 1 else raw
            return classification_table(self._classes, proba)
        return regression_table(raw)

    def _contributions(self, table: pa.Table) -> pa.Table:
        """LightGBM's own tree SHAP, on the margin (log-odds for a binary classifier)."""
        if self.context.task == CLASSIFICATION and not self._binary():
            raise NotImplementedError("multiclass")
        found = np.asarray(self.booster.predict(features(table, np.float64), pred_contrib=True))
        return contribution_table(self.schema.input_names(), found[:, :-1], found[:, -1], "margin")
