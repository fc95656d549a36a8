"""MLflow model directories: read `MLmodel` for the signature, load through the `python_function` flavor."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from finalmile.errors import InvalidModelError, MissingDependencyError
from finalmile.runtimes.base import BaseRuntime, Packaged, outputs_to_table
from finalmile.schema import Column, Schema, infer_schema

FRAMEWORK = "mlflow"
_TYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
}


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    if not isinstance(source, (str, Path)) or not (Path(source) / "MLmodel").is_file():
        raise InvalidModelError("an MLflow model is uploaded as its directory (the one holding MLmodel)")
    out = workdir / "mlflow"
    shutil.copytree(source, out, ignore=shutil.ignore_patterns("__pycache__"))
    try:
        spec = yaml.safe_load((out / "MLmodel").read_text())
    except yaml.YAMLError as exc:
        raise InvalidModelError(f"{source}/MLmodel is not valid YAML: {exc}") from None
    if not isinstance(spec, dict) or "python_function" not in (spec.get("flavors") or {}):
        raise InvalidModelError(f"{source}/MLmodel has no python_function flavor, so it cannot be served")
    model = _load(out)
    schema = signature_schema(spec.get("signature") or {})
    if schema.inputs is None and sample is not None:
        schema.inputs = infer_schema(sample).inputs
    if sample is not None and not schema.outputs:
        result = outputs_to_table(model.predict(sample.to_pandas()), sample.num_rows)
        schema.outputs = infer_schema(result).inputs or []
    return Packaged(FRAMEWORK, out, schema)


def signature_schema(signature: dict[str, Any]) -> Schema:
    """Our schema from an MLflow signature's column specs (tensor specs become tensor columns)."""

    def columns(spec: str | None, default: str) -> list[Column] | None:
        if not spec:
            return None
        result = []
        for i, item in enumerate(json.loads(spec)):
            if item.get("type") == "tensor":
                tensor = item["tensor-spec"]
                shape = tuple(d for d in tensor["shape"][1:])
                result.append(
                    Column(
                        name=item.get("name", default if i == 0 else f"{default}_{i}"),
                        dtype=tensor["dtype"],
                        shape=shape if all(d > 0 for d in shape) else (),
                    )
                )
            else:
                result.append(Column(name=item.get("name", f"{default}_{i}"), dtype=_TYPES.get(item["type"], "string")))
        return result

    return Schema(
        inputs=columns(signature.get("inputs"), "input"), outputs=columns(signature.get("outputs"), "prediction") or []
    )


def _load(directory: Path) -> Any:
    try:
        import mlflow.pyfunc
    except ModuleNotFoundError as exc:
        raise MissingDependencyError("mlflow", "mlflow") from exc
    try:
        return mlflow.pyfunc.load_model(str(directory))
    except Exception as exc:
        raise InvalidModelError(f"MLflow could not load the model: {type(exc).__name__}: {exc}") from None


class MLflowRuntime(BaseRuntime):
    """An MLflow pyfunc model directory, loaded with MLflow."""

    framework = FRAMEWORK
    needs_named_columns = True

    def _load(self) -> None:
        self.model = _load(self.context.artifact)

    def _predict(self, table: pa.Table) -> pa.Table:
        return outputs_to_table(self.model.predict(table.to_pandas()), table.num_rows)
