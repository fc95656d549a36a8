"""finalmile: deploy any trained model, run it at a fraction of the compute, watch it, pull the plug."""

from __future__ import annotations

from finalmile.client import Client
from finalmile.errors import (
    FinalmileError,
    IntegrityError,
    InvalidModelError,
    ModelNotFound,
    SchemaError,
    VersionPinnedError,
)
from finalmile.pipelines.pipeline import Pipeline, check, model_step, shadow, split
from finalmile.registry.schema import Column, Schema
from finalmile.registry.versions import ModelVersion

__version__ = "0.1.0"
__all__ = [
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
