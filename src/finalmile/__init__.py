"""finalmile: deploy any trained model, run it at a fraction of the compute, watch it, pull the plug."""

from __future__ import annotations

from finalmile._version import __version__
from finalmile.client import Client
from finalmile.errors import (
    FinalmileError,
    IntegrityError,
    InvalidModelError,
    ModelNotFound,
    SchemaError,
    VersionPinnedError,
)
from finalmile.registry.schema import Column, Schema
from finalmile.sdk.models import ModelVersion
from finalmile.sdk.pipelines import Pipeline, check, model_step, shadow, split

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
