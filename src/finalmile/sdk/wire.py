"""What crosses the wire back to the remote client: records into the dataclasses the embedded client returns,
errors into the classes it raises, inference answers with their provenance — so a verb's result and errors are the
same whichever transport carried it."""

from __future__ import annotations

import dataclasses
import typing
from datetime import datetime
from typing import Any, BinaryIO, TypeVar

import httpx
import pyarrow as pa

from finalmile.errors import ERROR_HEADER, FinalmileError, RemoteError, ServerUnreachable
from finalmile.verbs import VERBS

T = TypeVar("T")
DOWNLOAD_CHUNK = 1 << 20
"""Bytes read at a time from an answer written to a file (`Carrier._download`)."""


_TIMES: dict[type, frozenset[str]] = {}


def _datetime_fields(cls: type) -> frozenset[str]:
    if cls not in _TIMES:
        hints = typing.get_type_hints(cls)
        _TIMES[cls] = frozenset(name for name, hint in hints.items() if "datetime" in str(hint))
    return _TIMES[cls]


def decode(cls: type[T], body: dict[str, Any]) -> T:
    """`cls(**body)` with ISO 8601 text turned back into datetimes and fields the server added left out."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    times = _datetime_fields(cls)
    values = {
        k: (datetime.fromisoformat(v) if k in times and isinstance(v, str) else v)
        for k, v in body.items()
        if k in names
    }
    return cls(**values)


class RemoteResult:
    """A remote inference's rows and the provenance headers the server sent with them."""

    def __init__(self, table: pa.Table, headers: dict[str, str]) -> None:
        self.table = table
        self.headers = headers

    def metadata(self) -> dict[str, Any]:
        """Provenance as the server sent it in headers (distinct values; V2 responses carry it per row)."""
        return {
            "request_id": self.headers.get("finalmile-request-id", ""),
            "pipeline_version": int(self.headers["finalmile-pipeline-version"]),
            "variants": [v for v in self.headers.get("finalmile-variants", "").split(",") if v],
            "model_versions": [m for m in self.headers.get("finalmile-model-versions", "").split(",") if m],
        }


def raised(response: httpx.Response) -> FinalmileError:
    """The error the server raised, as its own class where the server named it (a `FinalmileError`), else
    a `RemoteError` with the status (a proxy's answer, FastAPI's own validation)."""
    try:
        body = response.json()
        message, detail = body.get("error", response.text), body.get("detail")
    except (ValueError, AttributeError):
        message, detail = response.text, None
    kind = response.headers.get(ERROR_HEADER, "")
    error = FinalmileError.rebuild(kind, str(message), detail)
    if type(error).__name__ != kind or isinstance(error, RemoteError):
        return RemoteError(response.status_code, str(message), detail)
    return error


class Carrier:
    """What the remote client's verb mixins call: `_call` carries a verb to its declared route, over the client's
    `_http` (`RemoteClient` sets it up)."""

    url: str
    _http: httpx.Client

    def _send(self, verb: str, params_in_path: dict[str, Any] | None, stream: bool, **kwargs: Any) -> httpx.Response:
        """`verb` sent on its declared route; an error answer is raised as the class the server raised. `stream`:
        the body is left to be read (and the response closed) by the caller."""
        declared = VERBS[verb]
        try:
            request = self._http.build_request(declared.method, declared.url(**(params_in_path or {})), **kwargs)
            response = self._http.send(request, stream=stream)
            if response.status_code >= 400:
                response.read()
                raise raised(response)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the finalmile server at {self.url}: {exc}") from None
        return response

    def _call(self, verb: str, *, params_in_path: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
        """Carry out `verb` on its declared route; an error answer is raised as the class the server raised."""
        return self._send(verb, params_in_path, False, **kwargs)

    def _json(self, verb: str, *, params_in_path: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        return self._call(verb, params_in_path=params_in_path, **kwargs).json()

    def _download(
        self, verb: str, into: BinaryIO, *, params_in_path: dict[str, Any] | None = None, **kwargs: Any
    ) -> None:
        """`_call` for an answer too large to hold in memory (an edge bundle and its wheels): written into `into`
        as it arrives."""
        response = self._send(verb, params_in_path, True, **kwargs)
        try:
            for chunk in response.iter_bytes(DOWNLOAD_CHUNK):
                into.write(chunk)
        except httpx.TransportError as exc:
            raise ServerUnreachable(f"cannot reach the finalmile server at {self.url}: {exc}") from None
        finally:
            response.close()
