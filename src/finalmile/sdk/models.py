"""`ModelVersion`: the handle users hold on one registered version — its record, and `predict` in-process."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pyarrow as pa

from finalmile.arrow.frames import to_arrow
from finalmile.registry.loader import RuntimeLoader, runtime_key
from finalmile.registry.store import VersionRecord
from finalmile.runtimes.base import Runtime
from finalmile.runtimes.explain import explain
from finalmile.schema import Schema


class ModelVersion:
    """One immutable version of a registered model.

    >>> mv = client.upload_model("fraud", forest, sample=X)
    >>> mv.version, mv.runtime          # 1, 'onnx' when the ONNX conversion matched the native model
    >>> mv.predict(X.head())            # same type back: pandas in, pandas out
    """

    def __init__(self, loader: RuntimeLoader, record: VersionRecord) -> None:
        self._loader = loader
        self.record = record
        self._runtimes: dict[str, Runtime] = {}
        self._lock = threading.Lock()

    name = property(lambda self: self.record.name)
    version = property(lambda self: self.record.version)
    framework = property(lambda self: self.record.framework)
    runtime = property(lambda self: self.record.runtime, doc="'onnx' when served converted, else the framework")
    aliases = property(lambda self: self.record.aliases)
    tags = property(lambda self: self.record.tags)
    task = property(lambda self: self.record.task)
    classes = property(lambda self: self.record.classes)
    conversion = property(lambda self: self.record.conversion, doc="the ONNX conversion verdict and its evidence")
    artifact_sha256 = property(lambda self: self.record.artifact_sha256)

    @property
    def schema(self) -> Schema:
        return Schema.model_validate(self.record.schema)

    @property
    def created_at(self) -> datetime:
        return self.record.created_at

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    def __repr__(self) -> str:
        return f"ModelVersion({self.ref}, framework={self.framework}, runtime={self.runtime})"

    def sample(self) -> pa.Table | None:
        """The sample stored at upload (the parity rows, and a baseline for drift monitors)."""
        return self._loader.sample(self.record)

    def load(self, runtime: str = "auto", batch_rows: int = 1) -> Runtime:
        """The loaded runtime (cached on this handle): for `auto`, the one measured fastest at about `batch_rows`
        rows (ONNX or the framework's own); `runtime="native"` runs the original framework."""
        key = runtime_key(self.record, runtime, batch_rows)
        with self._lock:
            if key not in self._runtimes:
                self._runtimes[key] = self._loader.load(self.record, key)
            return self._runtimes[key]

    def predict(self, frame: Any, runtime: str = "auto") -> Any:
        """Predict in-process. Takes pandas, Polars, pyarrow or a dict of numpy arrays; returns the same type."""
        table, back = to_arrow(frame)
        return back(self.load(runtime, table.num_rows).predict(table))

    def explain(self, frame: Any, background: Any = None) -> Any:
        """Each feature's contribution to each row's output — one column per feature, `base_value`, and `value`
        (their sum: the score, the margin or the prediction explained, as the table's metadata says) — in the
        same type as `frame`. Exact tree SHAP for tree models, permutation SHAP within a stated budget for the
        others (`runtimes.explain`); `background` (default: the upload sample) stands for "typical" rows."""
        table, back = to_arrow(frame)
        base = to_arrow(background)[0] if background is not None else self.sample()
        return back(explain(self.load("native"), table, base))
