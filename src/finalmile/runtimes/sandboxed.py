"""A runtime whose model runs uploaded code (a Python model, a pickle, an `nn.Module`, an MLflow pyfunc) runs in a
sandboxed child process (`finalmile.sandbox`): it sees its own artifact read-only and nothing else of the store,
no network, and none of the server's environment. The server hands it each batch as an Arrow IPC stream over a
pipe and reads the outputs back the same way (`runtimes/child.py` is the other end).

Data-only models (ONNX, XGBoost JSON/UBJ, LightGBM text, and scikit-learn once converted to ONNX) load nothing but
data and stay in the server's process, on the fast path. What the pipe costs a batch is in `bench/README.md`.
"""

from __future__ import annotations

import contextlib
import json
import struct
import subprocess
import sys
import threading
import weakref
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.errors import InvalidModelError, PredictionError
from finalmile.runtimes.base import RuntimeContext
from finalmile.sandbox import Reach, command, gpus
from finalmile.schema import SchemaValidator

CODE_RUNTIMES = frozenset({"python", "sklearn", "torch", "mlflow"})
"""Runtimes whose loading or running executes what a user uploaded (pickles unpickle by running code)."""
_HEADER = struct.Struct("<BQ")  # status (0 ok, 1 error), payload length
LOAD_TIMEOUT_S = 300.0


def write_message(out: IO[bytes], status: int, payload: bytes) -> None:
    out.write(_HEADER.pack(status, len(payload)))
    out.write(payload)
    out.flush()


def read_message(source: IO[bytes]) -> tuple[int, bytes] | None:
    """The next message, or None at the end of the stream (the other side is gone)."""
    header = source.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    status, size = _HEADER.unpack(header)
    payload = source.read(size)
    return (status, payload) if len(payload) == size else None


PREDICT, CONTRIBUTIONS = 0, 2
"""What a message to the child asks: a batch's outputs, or its rows' exact contributions."""
UNAVAILABLE = 2
"""The child's answer when the model has no exact contributions (the caller explains it another way)."""


class SandboxedRuntime:
    """The runtime `key` of a version, run in a sandboxed child: load there, predict over a pipe, one request at a
    time (the child is one process; a slot's threads take turns). A child that dies fails the batch it had, and
    the next batch starts a new one."""

    def __init__(self, context: RuntimeContext, key: str, unseen: Path) -> None:
        self.context = context
        self.unseen = unseen
        """The store's root home: the child sees its artifact and nothing else under it."""
        self.key = key
        self.framework = key
        self.schema = context.schema
        self.ready = False
        self._validator = SchemaValidator(context.schema)
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    def load(self) -> None:
        with self._lock:
            if self._child is None:
                self._start()
            self.ready = True

    def predict(self, table: pa.Table) -> pa.Table:
        return self._ask(PREDICT, table)

    def contributions(self, table: pa.Table) -> pa.Table:
        """The model's exact contributions, computed in the child where the model lives (`runtimes.explain`)."""
        return self._ask(CONTRIBUTIONS, table)

    def _ask(self, op: int, table: pa.Table) -> pa.Table:
        table = self._validator.conform(table)  # a bad request is the caller's SchemaError, as in-process
        with self._lock:
            if self._child is None:
                self._start()
            assert self._child is not None and self._child.stdin is not None and self._child.stdout is not None
            try:
                write_message(self._child.stdin, op, to_ipc(table))
                answer = read_message(self._child.stdout)
            except (BrokenPipeError, OSError):
                answer = None
            if answer is None:
                code = self._stop()
                raise PredictionError(f"{self.key} model's sandboxed process died (exit code {code})")
        status, payload = answer
        if status == UNAVAILABLE:
            raise NotImplementedError(json.loads(payload)["message"])
        if status != 0:
            raise PredictionError(json.loads(payload)["message"])
        return from_ipc(payload)

    def unload(self) -> None:
        with self._lock:
            self._stop()
            self.ready = False

    def _start(self) -> None:
        spec = {
            "artifact": str(self.context.artifact),
            "schema": self.context.schema.model_dump(mode="json"),
            "task": self.context.task,
            "classes": self.context.classes,
            "key": self.key,
        }
        settings = self.context.settings
        reach = Reach(read=(self.context.artifact,), hide=(self.unseen,), devices=gpus())
        argv, env = command([sys.executable, "-m", "finalmile.runtimes.child"], reach, settings.sandbox)
        child = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None)
        assert child.stdin is not None and child.stdout is not None
        self._child = child
        self._reaper = weakref.finalize(self, _end, child, 0.0)  # a runtime dropped unloaded leaves no process
        try:
            write_message(child.stdin, 0, json.dumps(spec, default=str).encode())
        except (BrokenPipeError, OSError):
            pass
        answer = _read_within(child.stdout, LOAD_TIMEOUT_S)
        if answer is None or answer[0] != 0:
            code = self._stop()
            reason = json.loads(answer[1])["message"] if answer else f"its process exited with code {code}"
            raise InvalidModelError(f"the {self.key} model failed to load in its sandbox: {reason}")

    def _stop(self) -> int | None:
        child, self._child = self._child, None
        if child is None:
            return None
        self._reaper.detach()
        return _end(child, 5.0)


def _end(child: subprocess.Popen[bytes], grace_s: float) -> int:
    """Close the child's pipes (it exits at the end of its input), killed if it is not gone within `grace_s`."""
    for stream in (child.stdin, child.stdout):
        if stream is not None:
            with contextlib.suppress(OSError):
                stream.close()
    try:
        return child.wait(timeout=grace_s) if grace_s else _kill(child)
    except subprocess.TimeoutExpired:
        return _kill(child)


def _kill(child: subprocess.Popen[bytes]) -> int:
    child.kill()
    return child.wait()


def _read_within(source: IO[bytes], timeout_s: float) -> Any:
    """`read_message`, given up after `timeout_s` (a model whose load hangs)."""
    found: list[Any] = []
    reader = threading.Thread(target=lambda: found.append(read_message(source)), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return found[0] if found else None
