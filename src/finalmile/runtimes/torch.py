"""PyTorch: TorchScript files, or an `nn.Module` exported with `torch.export` from a sample input.

Stored as a directory holding `model.pt` (TorchScript) or `model.pt2` (an exported program), so the runtime knows
which loader to use without guessing from bytes.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from finalmile.errors import InvalidModelError
from finalmile.runtimes.base import BaseRuntime, Packaged, features, outputs_to_table
from finalmile.schema import Column, Schema, infer_schema

FRAMEWORK = "torch"


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    out = workdir / "torch"
    out.mkdir()
    if isinstance(source, (str, Path)):
        path = Path(source)
        target = out / ("model.pt2" if path.suffix == ".pt2" else "model.pt")
        shutil.copyfile(path, target)
        model = _load(target)
    elif isinstance(source, torch.jit.ScriptModule):
        target = out / "model.pt"
        source.save(str(target))
        model = source
    elif isinstance(source, torch.nn.Module):
        if sample is None:
            raise InvalidModelError("an nn.Module is exported from an example input: pass sample=")
        model = _export(source.eval(), sample, out / "model.pt2")
    else:
        raise InvalidModelError(f"a {type(source).__name__} is not a PyTorch model")
    if sample is None:
        return Packaged(FRAMEWORK, out, Schema(inputs=None))
    inputs = infer_schema(sample).inputs or []
    result = _run(model, sample, inputs)
    outputs = [c for c in infer_schema(result).inputs or []]
    return Packaged(FRAMEWORK, out, Schema(inputs=inputs, outputs=outputs), native=model)


def _tensor(table: pa.Table, inputs: list[Column]) -> torch.Tensor:
    matrix = features(table, np.float32)
    if len(inputs) == 1 and inputs[0].shape:
        matrix = matrix.reshape(table.num_rows, *inputs[0].shape)
    if not matrix.flags.writeable or not matrix.flags.c_contiguous:  # a view of Arrow memory is read-only
        matrix = np.array(matrix, copy=True, order="C")
    return torch.from_numpy(matrix)


def _export(module: torch.nn.Module, sample: pa.Table, target: Path) -> Any:
    inputs = infer_schema(sample).inputs or []
    example = _tensor(sample, inputs)
    if example.shape[0] < 2:  # a batch of one would be specialised to exactly one row
        example = example.repeat(2, *([1] * (example.dim() - 1)))
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
        torch.export.save(program, str(target))
    except Exception as exc:
        raise InvalidModelError(
            f"could not export the nn.Module with torch.export: {type(exc).__name__}: {exc}"
        ) from None
    return program.module()


def _load(path: Path) -> Any:
    try:
        if path.suffix == ".pt2":
            return torch.export.load(str(path)).module()
        with warnings.catch_warnings():  # TorchScript is deprecated upstream, but users still have .pt files
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise InvalidModelError(
            f"{path.name}: not a TorchScript or torch.export file ({type(exc).__name__}); a state_dict is not a model:"
            " upload the nn.Module with sample= instead"
        ) from None


def _run(model: Any, table: pa.Table, inputs: list[Column]) -> pa.Table:
    with torch.inference_mode():
        result = model(_tensor(table, inputs))
    return outputs_to_table(result, table.num_rows, default_name="output")


class TorchRuntime(BaseRuntime):
    """TorchScript or an exported program, run on the CPU or CUDA."""

    framework = FRAMEWORK

    def _load(self) -> None:
        directory = self.context.artifact
        path = directory / "model.pt2" if (directory / "model.pt2").exists() else directory / "model.pt"
        self.model = _load(path)

    def _predict(self, table: pa.Table) -> pa.Table:
        return _run(self.model, table, self.schema.inputs or infer_schema(table).inputs or [])
