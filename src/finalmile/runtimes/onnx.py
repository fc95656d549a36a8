"""ONNX Runtime: for uploaded ONNX graphs and for the ONNX versions that upload converts tree and linear models to."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pyarrow as pa

from finalmile.arrow.frames import list_matrix, tensor_array
from finalmile.config import FinalmileSettings
from finalmile.errors import InvalidModelError
from finalmile.runtimes.base import CLASSIFICATION, REGRESSION, BaseRuntime, Packaged, classification_table, features
from finalmile.schema import Column, Schema

log = logging.getLogger(__name__)
FRAMEWORK = "onnx"

_ONNX_DTYPES = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.BOOL: "bool",
    onnx.TensorProto.STRING: "string",
}
_NUMPY_OF_ORT = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(bool)": np.bool_,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
}
_cpu_fallback_logged = False


def package(source: Any, workdir: Path, sample: pa.Table | None) -> Packaged:
    if isinstance(source, onnx.ModelProto):
        path = workdir / "model.onnx"
        path.write_bytes(source.SerializeToString())
    else:
        path = Path(source)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:
        raise InvalidModelError(f"{path}: not a valid ONNX model ({type(exc).__name__}: {exc})") from None
    return Packaged(FRAMEWORK, path, graph_schema(model))


def graph_schema(model: onnx.ModelProto) -> Schema:
    """Inputs and outputs from the graph; the first dimension is the batch, the rest is each row's shape."""
    initializers = {i.name for i in model.graph.initializer}
    inputs = [_column(v) for v in model.graph.input if v.name not in initializers]
    outputs = [c for c in (_column(v, strict=False) for v in model.graph.output) if c is not None]
    return Schema(inputs=inputs, outputs=outputs)  # type: ignore[arg-type]


def _column(value: onnx.ValueInfoProto, strict: bool = True) -> Column | None:
    t = value.type
    if not t.HasField("tensor_type"):
        if strict:
            raise InvalidModelError(f"ONNX input '{value.name}' is not a tensor; only tensor inputs are served")
        return None  # e.g. a ZipMap output: convert with zipmap=False to serve it
    dims = [d.dim_value if d.HasField("dim_value") else -1 for d in t.tensor_type.shape.dim]
    row_shape = tuple(dims[1:])
    if any(d <= 0 for d in row_shape):
        if strict:
            raise InvalidModelError(
                f"ONNX input '{value.name}' has dynamic dimensions beyond the batch ({dims}); pass schema= to fix them"
            )
        row_shape = ()
    dtype = _ONNX_DTYPES.get(t.tensor_type.elem_type, "float32")  # type: ignore[call-overload]
    return Column(name=value.name, dtype=dtype, shape=row_shape if row_shape != (1,) or strict else ())


def make_session(model_bytes: bytes, settings: FinalmileSettings) -> ort.InferenceSession:
    """A session tuned for a small machine: few threads, no spinning, full graph optimisation, CUDA when present."""
    global _cpu_fallback_logged
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings.ort_intra_op_threads
    options.inter_op_num_threads = settings.ort_inter_op_threads
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    options.log_severity_level = 3  # converters declare shapes that ORT warns about on every run
    providers = ["CPUExecutionProvider"]
    if settings.ort_device != "cpu":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif not _cpu_fallback_logged:
            log.info("CUDA execution provider not available; running ONNX models on the CPU")
            _cpu_fallback_logged = True
    return ort.InferenceSession(model_bytes, options, providers=providers)


class OnnxRuntime(BaseRuntime):
    """ONNX Runtime: what converted tree and linear models serve with."""

    framework = FRAMEWORK

    def _load(self) -> None:
        self.session = make_session(self.context.artifact.read_bytes(), self.context.settings)
        self._inputs = self.session.get_inputs()
        self._output_names = [o.name for o in self.session.get_outputs()]
        self._classes = np.asarray(self.context.classes) if self.context.classes is not None else None
        schema_names = self.schema.input_names()
        # One graph input fed from several columns (a converted tabular model): stack them into a matrix.
        self._stack = len(self._inputs) == 1 and schema_names != [self._inputs[0].name]
        self._row_shapes = {i.name: tuple(d if isinstance(d, int) else -1 for d in i.shape[1:]) for i in self._inputs}

    def unload(self) -> None:
        self.__dict__.pop("session", None)
        super().unload()

    def _feeds(self, table: pa.Table) -> dict[str, np.ndarray]:
        n = table.num_rows
        if self._stack:
            graph_input = self._inputs[0]
            matrix = features(table, _NUMPY_OF_ORT.get(graph_input.type, np.float32))
            return {graph_input.name: matrix.reshape(n, *self._row_shapes[graph_input.name])}
        feeds = {}
        for graph_input in self._inputs:
            col = table.column(graph_input.name)
            dtype = _NUMPY_OF_ORT.get(graph_input.type)
            if pa.types.is_fixed_size_list(col.type):
                values = list_matrix(col).reshape(-1)
            elif dtype is None:  # strings
                values = np.asarray(col.to_pylist(), dtype=object)
            else:
                values = col.to_numpy()
            shape = self._row_shapes[graph_input.name]
            feeds[graph_input.name] = (
                values.astype(dtype or object, copy=False).reshape(n, *shape)
                if shape
                else (values.astype(dtype or object, copy=False))
            )
        return feeds

    def _predict(self, table: pa.Table) -> pa.Table:
        results = self.session.run(self._output_names, self._feeds(table))
        task = self.context.task
        if task == CLASSIFICATION and self._classes is not None:
            if len(results) > 1:
                return classification_table(self._classes, results[1])
            return classification_table(self._classes, None, labels=results[0])
        if task == REGRESSION:
            return pa.table({"prediction": pa.array(results[0].astype(np.float64).reshape(-1))})
        columns = {}
        for name, value in zip(self._output_names, results, strict=True):
            if not isinstance(value, np.ndarray):
                continue
            columns[name] = (
                tensor_array(value)
                if value.ndim > 1 and math.prod(value.shape[1:]) > 1
                else (pa.array(value.reshape(-1)))
            )
        return pa.table(columns)
