"""The error hierarchy: every error a user can cause is a `FinalmileError`.

Each subclass carries the HTTP status a server should answer with and builds its message from structured fields, so
the CLI, the SDK and (later) the HTTP layer all say the same thing without importing a web framework here.
"""

from __future__ import annotations

from typing import Any


class FinalmileError(Exception):
    """Root of every user-facing finalmile error."""

    status_code: int = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail

    def to_dict(self) -> dict[str, Any]:
        """The JSON body an HTTP adapter sends: `{"error": ..., "detail": ...}`."""
        return {"error": self.message, "detail": self.detail}


class NotFoundError(FinalmileError):
    status_code = 404


class ModelNotFound(NotFoundError):
    def __init__(self, name: str, version: int | str | None = None) -> None:
        what = f"model '{name}'" if version is None else f"model '{name}' version {version}"
        super().__init__(f"{what} not found", {"name": name, "version": version})


class AliasNotFound(NotFoundError):
    def __init__(self, name: str, alias: str) -> None:
        super().__init__(f"model '{name}' has no alias '{alias}'", {"name": name, "alias": alias})


class ConflictError(FinalmileError):
    status_code = 409


class VersionPinnedError(ConflictError):
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
    status_code = 503


class PayloadTooLarge(FinalmileError):
    status_code = 413
