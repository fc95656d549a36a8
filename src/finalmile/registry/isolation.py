"""Uploads over HTTP are checked in a sandboxed child: unpickling a model or importing a `.py` model runs its code,
and a failing or hostile upload must not crash, block or run inside the server, nor reach anything of the store.

The child (`python -m finalmile.registry.isolation`, inside `finalmile.sandbox`) sees the uploaded file read-only
and a scratch folder it may write, no network and no environment of the server's. It runs `upload.prepare` there
(package, sample, conversion and parity) and answers in JSON, never a pickle (unpickling the child's answer would
run the child's code in the server). The server then stores the files the answer names, once it has checked that
each is a plain file inside the scratch folder (a link could point at the server's own files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import traceback
from functools import partial
from pathlib import Path
from typing import Any

from finalmile.arrow.frames import to_arrow
from finalmile.config import FinalmileSettings
from finalmile.errors import FinalmileError, InvalidModelError, RemoteError
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.store import MetadataStore, NewVersion, VersionRecord
from finalmile.registry.upload import Prepared, upload_model
from finalmile.sandbox import Reach, command
from finalmile.schema import Schema


def upload_in_child(
    store: MetadataStore,
    artifacts: ArtifactStore,
    settings: FinalmileSettings,
    unseen: Path,
    name: str,
    source: Path,
    options: dict[str, Any],
) -> VersionRecord:
    """`upload_model`, its model's code run in a sandboxed child; refused with a 422 when the child fails, dies or
    outlasts the `upload_timeout_s` setting. `unseen` is the store's root home."""
    return upload_model(
        store, artifacts, settings, name, source, **options, preparer=partial(_prepare_in_child, unseen)
    )


def _prepare_in_child(
    unseen: Path,
    settings: FinalmileSettings,
    workdir: Path,
    source: Any,
    framework: str | None,
    given: Schema | None,
    sample: Any,
    runtime: str,
) -> Prepared:
    """`upload.prepare` in the sandbox, `workdir` its scratch folder; the files it names checked to be its own."""
    scratch, source = workdir.resolve(), Path(source)
    request = {
        "source": str(source.resolve()),
        "framework": framework,
        "schema": given.model_dump(mode="json") if given is not None else None,
        "sample": None,
        "runtime": runtime,
    }
    if sample is not None:
        import pyarrow.parquet as pq

        pq.write_table(to_arrow(sample)[0], scratch / "given-sample.parquet")
        request["sample"] = str(scratch / "given-sample.parquet")
    reach = Reach(read=(source.resolve(),), write=(scratch,), hide=(unseen,))
    argv, env = command([sys.executable, "-m", "finalmile.registry.isolation", str(scratch)], reach,
                        settings.sandbox, cwd=scratch)  # fmt: skip
    try:
        done = subprocess.run(
            argv, env=env, input=json.dumps(request), capture_output=True, text=True, timeout=settings.upload_timeout_s
        )
    except subprocess.TimeoutExpired:
        raise InvalidModelError(
            f"{source.name}: checking the upload took longer than {settings.upload_timeout_s:g} s and was stopped",
            {"field": "file"},
        ) from None
    try:
        answer = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        raise InvalidModelError(
            f"{source.name}: the process checking the upload died (exit code {done.returncode}); nothing was "
            "registered",
            {"field": "file"},
        ) from None
    if answer.get("status") != "ok":
        raise RemoteError(int(answer.get("code", 422)), str(answer.get("message")), answer.get("detail"))
    files = {key: _inside(scratch, answer.get(key)) for key in ("artifact", "onnx", "sample")}
    if files["artifact"] is None:
        raise InvalidModelError(f"{source.name}: the check produced no artifact", {"field": "file"})
    return Prepared(NewVersion(**answer["new"]), files["artifact"], files["onnx"], files["sample"])


def _inside(scratch: Path, name: Any) -> Path | None:
    """The file the child named, if it is a plain file in the scratch folder; anything else is refused."""
    if name is None:
        return None
    path = scratch / str(name)
    real = Path(os.path.realpath(path))
    if path.is_symlink() or not real.is_file() or not real.is_relative_to(scratch):
        raise InvalidModelError(f"the upload's check named {name!r}, not a file of its own", {"field": "file"})
    return real


def _child(scratch: Path, request: dict[str, Any]) -> dict[str, Any]:
    """In the sandbox: prepare the upload in `scratch` and say what was made, as JSON."""
    import pyarrow.parquet as pq

    from finalmile.registry.upload import prepare

    settings = FinalmileSettings(home=scratch / "home", sandbox="off")
    sample = pq.read_table(request["sample"]) if request["sample"] else None
    schema = Schema.model_validate(request["schema"]) if request["schema"] else None
    work = scratch / "work"
    work.mkdir()
    prepared = prepare(
        settings, work, Path(request["source"]), request["framework"], schema, sample, request["runtime"]
    )

    def name(path: Path | None) -> str | None:
        """Where a file the server is to store lies in the scratch folder (a pickle packaged as itself is copied)."""
        if path is None:
            return None
        if not path.resolve().is_relative_to(scratch.resolve()):
            path = Path(shutil.copyfile(path, scratch / f"made-{path.name}"))
        return str(path.resolve().relative_to(scratch.resolve()))

    return {
        "status": "ok",
        "new": vars(prepared.new),
        "artifact": name(prepared.artifact),
        "onnx": name(prepared.onnx),
        "sample": name(prepared.sample),
    }


def main() -> int:
    scratch = Path(sys.argv[1])
    request = json.loads(sys.stdin.read())
    real_stdout = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # what the model's code prints stays out of the answer
    try:
        answer = _child(scratch, request)
    except FinalmileError as exc:
        answer = {"status": "error", "code": exc.status_code, "message": exc.message, "detail": _plain(exc.detail)}
    except BaseException as exc:  # the uploaded code's own failure: the caller's problem, said without a traceback
        last = traceback.extract_tb(exc.__traceback__)[-1:]
        where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        message = f"{Path(request['source']).name}: {type(exc).__name__}: {exc}{where}"
        answer = {"status": "error", "code": 422, "message": message, "detail": {"field": "file"}}
    real_stdout.write("\n" + json.dumps(answer, default=str) + "\n")
    real_stdout.flush()
    return 0


def _plain(detail: Any) -> Any:
    """Detail that survives JSON: JSON-like values only."""
    if isinstance(detail, (str, int, float, bool)) or detail is None:
        return detail
    if isinstance(detail, dict):
        return {str(k): _plain(v) for k, v in detail.items()}
    if isinstance(detail, (list, tuple)):
        return [_plain(v) for v in detail]
    return str(detail)


if __name__ == "__main__":
    sys.exit(main())
