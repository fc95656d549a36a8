"""finalmile: deploy any trained model, run it at a fraction of the compute, watch it, pull the plug.

The SDK's names are imported on first use (PEP 562): `import finalmile` (which every `finalmile` command does, through
`finalmile.errors`) then costs milliseconds instead of the seconds the client's libraries take to import.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from finalmile._version import __version__
from finalmile.errors import (
    FinalmileError,
    IntegrityError,
    InvalidModelError,
    ModelNotFound,
    SchemaError,
    VersionPinnedError,
)

if TYPE_CHECKING:
    from finalmile.client import Client
    from finalmile.schema import Column, Schema
    from finalmile.sdk.models import ModelVersion
    from finalmile.sdk.pipelines import Pipeline, check, model_step, shadow, split

_LAZY = {
    "Client": "finalmile.client",
    "Column": "finalmile.schema",
    "Schema": "finalmile.schema",
    "ModelVersion": "finalmile.sdk.models",
    "Pipeline": "finalmile.sdk.pipelines",
    "check": "finalmile.sdk.pipelines",
    "model_step": "finalmile.sdk.pipelines",
    "shadow": "finalmile.sdk.pipelines",
    "split": "finalmile.sdk.pipelines",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'finalmile' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # looked up once
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "__version__",
    "Client",
    "Column",
    "FinalmileError",
    "IntegrityError",
    "InvalidModelError",
    "ModelNotFound",
    "ModelVersion",
    "Pipeline",
    "Schema",
    "SchemaError",
    "VersionPinnedError",
    "check",
    "model_step",
    "shadow",
    "split",
]
