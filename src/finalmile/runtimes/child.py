"""The sandboxed end of `SandboxedRuntime`: `python -m finalmile.runtimes.child` reads the version's spec, loads
its runtime, answers `ready`, then answers each batch (an Arrow IPC stream) with the outputs or the error."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from finalmile.arrow.ipc import from_ipc, to_ipc
from finalmile.config import FinalmileSettings
from finalmile.runtimes import runtime_class
from finalmile.runtimes.base import RuntimeContext
from finalmile.runtimes.sandboxed import CONTRIBUTIONS, UNAVAILABLE, read_message, write_message
from finalmile.schema import Schema


def _error(exc: BaseException) -> bytes:
    message = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
    return json.dumps({"message": str(message)}).encode()


def main() -> int:
    source, out = sys.stdin.buffer, os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # a model that prints (from Python or C) writes to the server's log, not into the answers
    sys.stdout = sys.stderr
    first = read_message(source)
    if first is None:
        return 1
    spec = json.loads(first[1])
    try:
        settings = FinalmileSettings(home=Path(os.environ.get("TMPDIR", "/tmp")) / "finalmile", sandbox="off")
        context = RuntimeContext(
            Path(spec["artifact"]), Schema.model_validate(spec["schema"]), spec["task"], spec["classes"], settings
        )
        runtime = runtime_class(spec["key"])(context)
        runtime.load()
    except BaseException as exc:
        write_message(out, 1, _error(exc))
        return 1
    write_message(out, 0, b"")
    while (message := read_message(source)) is not None:
        op, payload = message
        try:
            table = from_ipc(payload)
            if op == CONTRIBUTIONS and not hasattr(runtime, "contributions"):
                raise NotImplementedError(f"{spec['key']} models have no exact contributions")
            answer = to_ipc(runtime.contributions(table) if op == CONTRIBUTIONS else runtime.predict(table))
        except NotImplementedError as exc:
            write_message(out, UNAVAILABLE, _error(exc))
            continue
        except BaseException as exc:
            write_message(out, 1, _error(exc))
            continue
        write_message(out, 0, answer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
