"""`ModelVersion`: the handle users hold on one registered version — its record, and `predict` in-process."""

from __future__ import annotations

import shutil
import threading
import weakref
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.frames import to_arrow
from finalmile.registry.schema import Schema
from finalmile.registry.store import VersionRecord
from finalmile.runtimes import DIRECTORY_FRAMEWORKS, runtime_class
from finalmile.runtimes.base import Runtime, RuntimeContext

if TYPE_CHECKING:
    from finalmile.client import Client


class ModelVersion:
    """One immutable version of a registered model.

    >>> mv = client.upload_model("fraud", forest, sample=X)
    >>> mv.version, mv.runtime          # 1, 'onnx' when the ONNX conversion matched the native model
    >>> mv.predict(X.head())            # same type back: pandas in, pandas out
    """

    def __init__(self, client: Client, record: VersionRecord) -> None:
        self._client = client
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
        if self.record.sample_sha256 is None:
            return None
        return pq.read_table(self._client._artifacts.verified_path(self.record.sample_sha256))

    def load(self, runtime: str = "auto") -> Runtime:
        """The loaded runtime (cached): ONNX when the version was converted, the native framework otherwise.

        `runtime="native"` runs the original framework even for a converted version.
        """
        key = self.record.runtime if runtime == "auto" else (self.record.framework if runtime == "native" else runtime)
        with self._lock:
            if key not in self._runtimes:
                self._runtimes[key] = self._make_runtime(key)
            return self._runtimes[key]

    def _make_runtime(self, key: str) -> Runtime:
        artifacts = self._client._artifacts
        if key == "onnx" and self.record.onnx_sha256:
            artifact = artifacts.verified_path(self.record.onnx_sha256)
        elif self.record.framework in DIRECTORY_FRAMEWORKS:
            artifact = artifacts.unpack(self.record.artifact_sha256)
            weakref.finalize(self, shutil.rmtree, artifact, ignore_errors=True)  # the files live as long as the handle
        else:
            artifact = artifacts.verified_path(self.record.artifact_sha256)
        context = RuntimeContext(artifact, self.schema, self.record.task, self.record.classes, self._client.settings)
        runtime: Runtime = runtime_class(key)(context)
        runtime.load()
        return runtime

    def predict(self, frame: Any, runtime: str = "auto") -> Any:
        """Predict in-process. Takes pandas, Polars, pyarrow or a dict of numpy arrays; returns the same type."""
        table, back = to_arrow(frame)
        return back(self.load(runtime).predict(table))
