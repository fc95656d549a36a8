"""Loading a registered version's runtime: the artifact found, its hash verified, the framework's runtime loaded."""

from __future__ import annotations

import shutil
import threading
import weakref
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.config import FinalmileSettings
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.store import VersionRecord
from finalmile.runtimes import DIRECTORY_FRAMEWORKS, runtime_class
from finalmile.runtimes.base import Runtime, RuntimeContext
from finalmile.runtimes.sandboxed import CODE_RUNTIMES, SandboxedRuntime
from finalmile.runtimes.selection import fastest
from finalmile.schema import Schema


class RuntimeLoader:
    """Turns version records into loaded runtimes; the one place that knows which artifact a runtime reads.

    One load per process: every pipeline (and handle) that pins the same version and runtime shares the runtime,
    for as long as any of them holds it (a runtime already serves a slot's several threads at once)."""

    def __init__(self, artifacts: ArtifactStore, settings: FinalmileSettings, unseen: Path | None = None) -> None:
        self.artifacts = artifacts
        self.settings = settings
        self.unseen = unseen or settings.home
        """The store's root home, hidden from a sandboxed model but for its own artifact."""
        self._loaded: weakref.WeakValueDictionary[tuple[str, int, str], Runtime] = weakref.WeakValueDictionary()
        self._lock = threading.Lock()

    def load(self, record: VersionRecord, runtime: str = "auto", batch_rows: int = 1) -> Runtime:
        """The loaded runtime: for `auto`, the one measured fastest at about `batch_rows` rows among those whose
        outputs match (ONNX or the framework's own); `runtime="native"` runs the original framework."""
        key = runtime_key(record, runtime, batch_rows)
        if key in CODE_RUNTIMES and runtime == "auto" and record.onnx_sha256 and self.settings.sandbox != "off":
            key = "onnx"  # its outputs matched: serve the data-only graph in-process, not the pickle in a sandbox
        with self._lock:  # one load at a time per process: two deployments of one model never load it twice
            loaded = self._loaded.get((record.name, record.version, key))
            if loaded is None:
                loaded = self._loaded[(record.name, record.version, key)] = self._load(record, key)
            return loaded

    def _load(self, record: VersionRecord, key: str) -> Runtime:
        cleanup = None
        if key == "onnx" and record.onnx_sha256:
            artifact = self.artifacts.verified_path(record.onnx_sha256)
        elif record.framework in DIRECTORY_FRAMEWORKS:
            artifact = cleanup = self.artifacts.unpack(record.artifact_sha256)
        else:
            artifact = self.artifacts.verified_path(record.artifact_sha256)
        context = RuntimeContext(
            artifact, Schema.model_validate(record.schema), record.task, record.classes, self.settings
        )
        if key in CODE_RUNTIMES and self.settings.sandbox != "off":
            loaded: Runtime = SandboxedRuntime(context, key, self.unseen)
        else:
            loaded = runtime_class(key)(context)
        if cleanup is not None:  # the unpacked files live as long as the runtime that reads them
            weakref.finalize(loaded, shutil.rmtree, cleanup, ignore_errors=True)
        loaded.load()
        return loaded

    def sample(self, record: VersionRecord) -> pa.Table | None:
        """The sample stored at upload (the parity rows, and a baseline for drift monitors)."""
        if record.sample_sha256 is None:
            return None
        return pq.read_table(self.artifacts.verified_path(record.sample_sha256))


def runtime_key(record: VersionRecord, runtime: str = "auto", batch_rows: int = 1) -> str:
    """The runtime a request for `runtime` means: `auto` the fastest measured at about `batch_rows` rows (what the
    version serves with when it has no timings), `native` its framework."""
    if runtime == "native":
        return record.framework
    if runtime != "auto":
        return runtime
    timings = (record.conversion or {}).get("timings_us")
    if timings and record.onnx_sha256:
        return fastest(timings, batch_rows)
    return record.runtime
