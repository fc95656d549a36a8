"""The error hierarchy: every error a user can cause is a `FinalmileError`.

Each subclass carries the HTTP status a server should answer with and builds its message from structured fields, so
the CLI, the SDK and (later) the HTTP layer all say the same thing without importing a web framework here.
"""

from __future__ import annotations

from typing import Any

ERROR_HEADER = "finalmile-error"
"""The HTTP header that names a server's error class, so the remote client raises the class the embedded one does."""


class FinalmileError(Exception):
    """Root of every user-facing finalmile error."""

    status_code: int = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def reword(self, message: str) -> None:
        """Say the same error in other words (where it happened, without server paths), keeping its class."""
        self.message = message
        self.args = (message,)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an HTTP adapter sends: `{"error": ..., "detail": ...}`."""
        return {"error": self.message, "detail": self.detail}

    @staticmethod
    def rebuild(kind: str, message: str, detail: Any = None) -> FinalmileError:
        """The error named `kind` (a class of this module), as carried across processes as plain data: a Ray
        worker's error, whose class's own constructor may take other arguments. Unknown kinds are prediction
        errors."""
        cls = globals().get(kind)
        if not (isinstance(cls, type) and issubclass(cls, FinalmileError)):
            cls = PredictionError
        error = cls.__new__(cls)
        FinalmileError.__init__(error, message, detail)
        return error


class BadRequestError(FinalmileError):
    """A request that is malformed before it reaches a model: a header, a path segment, an option's value."""

    status_code = 400


class InvalidNameError(BadRequestError):
    """A model, pipeline or alias name, or a `NAME:VERSION`/`NAME@ALIAS` reference, that cannot be stored."""


class InvalidCheckError(BadRequestError):
    """A check expression outside the small language `pipelines.checks` accepts."""


class PipelineDefinitionError(BadRequestError):
    """A pipeline definition (YAML or dict) that cannot be read or run as written."""


class ActionFailed(BadRequestError):
    """A monitor's action (webhook, rollback, route, undeploy) that could not be carried out."""


class QueryError(BadRequestError):
    """SQL the sandbox refuses or DuckDB cannot run; carries DuckDB's message."""


class ServerUnreachable(FinalmileError):
    """The remote client could not reach its finalmile server at all (no HTTP answer)."""

    status_code = 503


class RemoteError(FinalmileError):
    """An error raised elsewhere — a finalmile server, an upload's child process — with its HTTP status kept, so
    callers can tell 404 from 422 (exceptions do not travel whole between processes)."""

    def __init__(self, status_code: int, message: str, detail: Any = None) -> None:
        super().__init__(message, detail)
        self.status_code = status_code


class NotFoundError(FinalmileError):
    """Something named in the request does not exist."""

    status_code = 404


class ModelNotFound(NotFoundError):
    """No model of that name, or no such version of it."""

    def __init__(self, name: str, version: int | str | None = None) -> None:
        what = f"model '{name}'" if version is None else f"model '{name}' version {version}"
        super().__init__(f"{what} not found", {"name": name, "version": version})


class AliasNotFound(NotFoundError):
    """A `NAME@ALIAS` reference to an alias the model does not have."""

    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model '{name}' has no alias '{alias}'", {"name": name, "alias": alias})


class PipelineNotFound(NotFoundError):
    """No pipeline of that name, or no such version of it."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"pipeline '{name}'" if version is None else f"pipeline '{name}' version {version}"
        super().__init__(f"{what} not found", {"name": name, "version": version})


class PipelineNotDeployed(NotFoundError):
    """A pipeline (or a version of it) that is not serving in this process."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = f"pipeline '{name}'" + (f" version {version}" if version is not None else "")
        super().__init__(f"{what} is not deployed", {"name": name, "version": version})


class MonitorNotFound(NotFoundError):
    """No saved monitor of that name."""

    def __init__(self, name: str) -> None:
        super().__init__(f"monitor '{name}' not found", {"name": name})


class ConflictError(FinalmileError):
    """The request clashes with what is stored (a name taken, a concurrent change)."""

    status_code = 409


class VersionPinnedError(ConflictError):
    """A model version that an alias or a pipeline version still pins cannot be deleted."""

    def __init__(self, name: str, version: int, pinned_by: list[str]) -> None:
        super().__init__(
            f"model '{name}' version {version} is pinned by {', '.join(pinned_by)}; unpin it first",
            {"name": name, "version": version, "pinned_by": pinned_by},
        )


class SchemaError(FinalmileError):
    """Input that does not match a model's schema; names every offending column."""

    status_code = 422

    def __init__(self, problems: list[str]) -> None:
        super().__init__("input does not match the model's schema: " + "; ".join(problems), {"problems": problems})
        self.problems = problems


class InvalidModelError(FinalmileError):
    """A source that is not a model we can register: corrupt, truncated, unknown format, missing `predict`."""

    status_code = 422


class InvalidInputError(FinalmileError):
    """A request or file the user gave that we cannot read."""

    status_code = 422


class IntegrityError(FinalmileError):
    """A stored artifact whose bytes no longer hash to the recorded sha256."""

    status_code = 500

    def __init__(self, sha256: str, actual: str, path: str) -> None:
        super().__init__(
            f"artifact {sha256[:12]}… at {path} is corrupt or was tampered with (its content hashes to {actual[:12]}…);"
            " refusing to load it",
            {"expected": sha256, "actual": actual, "path": path},
        )


class MissingDependencyError(FinalmileError):
    """An optional framework that is not installed; names the extra to install."""

    status_code = 501

    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"this needs the '{package}' package: pip install 'finalmile[{extra}]'",
            {"package": package, "extra": extra},
        )


class PredictionError(FinalmileError):
    """The model (or a Python step) failed on this input: the request's problem to report, not the server's."""

    status_code = 422


class NotReadyError(FinalmileError):
    """The thing exists but cannot answer yet (a pipeline that is stored but not deployed)."""

    status_code = 503


class SandboxUnavailable(FinalmileError):
    """`FINALMILE_SANDBOX=bwrap` and no bubblewrap on the machine: uploaded code is not run at all."""

    status_code = 503


class BackendUnavailable(FinalmileError):
    """The backend could not place or reach what serves a pipeline (Ray replicas that would not start or died)."""

    status_code = 503


class PayloadTooLarge(FinalmileError):
    """A request body over `max_body_bytes`, refused before it is read whole."""

    status_code = 413


class Unauthorized(FinalmileError):
    """A request to a server with authentication on that carries no token, or one that is unknown, expired or
    revoked."""

    status_code = 401


class Forbidden(FinalmileError):
    """A valid token whose role in its workspace does not allow what the request asks."""

    status_code = 403


_VARIANT = "finalmile_variant"


def fail_in_variant(exc: BaseException, variant: str) -> None:
    """Say which A/B variant `exc` was raised in (the innermost one, as a served row's route does), so the log's
    error row names its arm: a rollout judges each arm's error rate."""
    if getattr(exc, _VARIANT, None) is None:
        try:
            setattr(exc, _VARIANT, variant)
        except AttributeError:  # an exception class with __slots__: its row stays without a variant
            pass


def failed_variant(exc: BaseException) -> str | None:
    """The A/B variant `exc` was raised in, if it was raised inside one."""
    return getattr(exc, _VARIANT, None)
