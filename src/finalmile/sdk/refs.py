"""Handles stand for names: wherever a verb takes a model reference or a pipeline name, a handle will do."""

from __future__ import annotations

from typing import Any


def model_ref(model: Any) -> str:
    """`"fraud:3"` from a `ModelVersion` (or a remote one); a string as it is."""
    return model if isinstance(model, str) else str(getattr(model, "ref", model))


def pipeline_name(pipeline: Any) -> str:
    """`"fraud"` from a `Pipeline` handle; a string as it is."""
    return pipeline if isinstance(pipeline, str) else str(getattr(pipeline, "name", pipeline))
