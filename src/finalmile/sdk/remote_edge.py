"""The remote client's edge verb: the server writes the bundle (`GET /api/v1/pipelines/{name}/bundle`, a tar.gz),
the client unpacks it where it was asked to."""

from __future__ import annotations

import tarfile
import tempfile
from pathlib import Path
from typing import Any

from finalmile.edge.bundle import read_bundle
from finalmile.errors import BadRequestError
from finalmile.sdk.edge import bundle_summary
from finalmile.sdk.refs import pipeline_name
from finalmile.sdk.wire import Carrier

BUNDLE_TIMEOUT_S = 900.0
"""Collecting the wheels takes the server tens of seconds; sending them, what the link allows."""


class RemoteEdgeVerbs(Carrier):
    """Mixed into `RemoteClient`."""

    def bundle_pipeline(
        self, name: Any, output: str | Path, version: int | None = None, wheels: bool = True
    ) -> dict[str, Any]:
        target = Path(output)
        if target.exists() and any(target.iterdir()):
            raise BadRequestError(f"output: {target} is not empty", {"field": "output"})
        params: dict[str, Any] = {"wheels": wheels} | ({"version": version} if version is not None else {})
        where = {"name": pipeline_name(name)}
        with tempfile.TemporaryFile() as received:  # the wheels make it hundreds of MB: on disk, not in memory
            self._download("bundle_pipeline", received, params_in_path=where, params=params, timeout=BUNDLE_TIMEOUT_S)
            received.seek(0)
            target.mkdir(parents=True, exist_ok=True)
            with tarfile.open(fileobj=received, mode="r:gz") as archive:
                archive.extractall(target, filter="data")  # no path may leave `output`, no device or link
        return bundle_summary(read_bundle(target), target)
