"""Uploads over HTTP run in a child process: unpickling a model or importing a `.py` model runs its code, and a
failing or hostile upload must not crash, block or run inside the server. The child registers the version in the
same store and hands back the record; the server's process never loads the uploaded code.
"""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path
from typing import Any

from finalmile.config import FinalmileSettings
from finalmile.errors import FinalmileError, InvalidModelError, RemoteError
from finalmile.registry.store import VersionRecord


def upload_in_child(
    settings: FinalmileSettings, name: str, source: Path, options: dict[str, Any], timeout_s: float
) -> VersionRecord:
    """`upload_model` in a fresh (spawned) process; refused with a 422 when it dies or outlasts `timeout_s`."""
    context = multiprocessing.get_context("spawn")  # nothing of the server's state, threads or locks is inherited
    receive, send = context.Pipe(duplex=False)
    child = context.Process(
        target=_upload, args=(send, settings.model_dump(), name, str(source), options), name="finalmile-upload"
    )
    child.start()
    send.close()
    try:
        if not receive.poll(timeout_s):
            raise InvalidModelError(
                f"{source.name}: checking the upload took longer than {timeout_s:g} s and was stopped",
                {"field": "file"},
            )
        outcome = receive.recv()
    except EOFError:
        child.join(5)
        raise InvalidModelError(
            f"{source.name}: the process checking the upload died (exit code {child.exitcode}); nothing was registered",
            {"field": "file"},
        ) from None
    finally:
        if child.is_alive():
            child.kill()
        child.join(5)
        receive.close()
    if outcome[0] == "ok":
        return outcome[1]
    _, status, message, detail = outcome
    raise RemoteError(status, message, detail)


def _upload(send: Any, settings: dict[str, Any], name: str, source: str, options: dict[str, Any]) -> None:
    from finalmile.registry.artifacts import ArtifactStore
    from finalmile.registry.store import MetadataStore
    from finalmile.registry.upload import upload_model

    config = FinalmileSettings.model_validate(settings)
    store = MetadataStore(config.resolved_database_url())
    try:
        record = upload_model(store, ArtifactStore(config.home / "artifacts"), config, name, Path(source), **options)
        send.send(("ok", record))
    except FinalmileError as exc:
        send.send(("error", exc.status_code, exc.message, _plain(exc.detail)))
    except Exception as exc:  # the uploaded code's own failure: the caller's problem, said without a traceback
        last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
        where = f" (at {Path(last[0].filename).name}:{last[0].lineno})" if last else ""
        send.send(("error", 422, f"{Path(source).name}: {type(exc).__name__}: {exc}{where}", {"field": "file"}))
    finally:
        store.close()
        send.close()


def _plain(detail: Any) -> Any:
    """Detail that survives the pipe: JSON-like values only."""
    if isinstance(detail, (str, int, float, bool)) or detail is None:
        return detail
    if isinstance(detail, dict):
        return {str(k): _plain(v) for k, v in detail.items()}
    if isinstance(detail, (list, tuple)):
        return [_plain(v) for v in detail]
    return str(detail)
