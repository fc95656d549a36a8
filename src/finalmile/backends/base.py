"""The `Backend` protocol: where deployed pipeline versions run. The data plane, the SDK and the server's sync talk
to a backend only through it, so a Ray backend slots in beside the local one with no change elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from finalmile.arrow.tensors import Rows
from finalmile.backends.config import DeploymentConfig
from finalmile.pipelines.loaded import RequestResult
from finalmile.schema import Schema

Wanted = Callable[[], Mapping[str, tuple[int, DeploymentConfig]]]
"""Reads the deployments recorded in the store: pipeline name -> (version, config)."""


@dataclass(frozen=True, slots=True)
class InferRequest:
    """One inference request as every transport hands it to the data plane, and the data plane to a backend."""

    pipeline: str
    table: Rows
    version: int | None = None
    """None: whichever version serves; a number: that one or `PipelineNotDeployed`."""
    log: bool = True
    request_id: str | None = None
    """The id its rows get in the log (a stream's message id); None: a fresh one."""
    trace: Any = None
    """The request's span when tracing is on (`finalmile.tracing`): its queue wait and batch are traced under it."""
    durable: bool = False
    """Rows logged by another process (a Ray replica) are on its disk before the answer, as a stream needs before it
    acknowledges a message. Rows this process logs are the caller's to make durable (`LogWriter.durable()`, once per
    batch of messages rather than once per call)."""


class Serving(Protocol):
    """What a backend says of the version serving a pipeline (V2 metadata reads the schema)."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def input_schema(self) -> Schema | None: ...


class Target(Serving, Protocol):
    """A deployment as a request finds it: resolved once, then asked to answer."""

    async def infer(self, request: InferRequest) -> RequestResult:
        """Conform, batch and run one request; failures are logged (when `request.log`) and raised."""


class Backend(Protocol):
    """Installs pipeline versions with their deployment config, serves inference, and converges on the store."""

    name: str

    def deploy(
        self, pipeline: str, version: int, config: DeploymentConfig, record: Callable[[], object] | None = None
    ) -> None:
        """Load and warm `version` beside what serves `pipeline`, call `record` (the store's deployment row), then
        swap it in; a version that cannot load raises before `record` runs, so it is never recorded."""

    def undeploy(self, pipeline: str) -> None:
        """Stop serving `pipeline`; requests already accepted finish."""

    def sync(self) -> None:
        """Converge on the deployments the store records (servers sharing a store each do this every second)."""

    def deployed(self) -> dict[str, int]:
        """Pipeline name -> the version serving it now."""

    def serves(self, pipeline: str) -> bool:
        """Whether a version of `pipeline` serves here (no copy of `deployed()`)."""

    def target(self, pipeline: str, version: int | None = None) -> Target:
        """The deployment that answers `pipeline` (optionally required to be `version`); `PipelineNotDeployed`
        otherwise. A request resolves it once and asks it to infer."""

    async def infer_each(
        self, pipeline: str, table: pa.Table, ids: list[str], log: bool = True, durable: bool = False
    ) -> list[RequestResult]:
        """Each row of `table` is a request of its own, named `ids[i]` in the log (a stream's messages): conformed
        and run as one batch, split back per row. Raises when the batch fails as a whole; the caller then sends
        the rows one by one, so that a bad one fails alone. `durable` as for `infer`."""

    def close(self) -> None:
        """Undeploy everything this backend serves."""
