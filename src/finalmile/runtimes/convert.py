"""Automatic ONNX conversion of tree and linear models, accepted only when the converted outputs match.

The verdict is stored with the version and shown by `models show`, whichever way it went: a model that converts
but disagrees with itself keeps its native runtime, and the record says by how much it disagreed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pyarrow as pa

from finalmile.arrow.frames import column_numpy
from finalmile.config import FinalmileSettings
from finalmile.runtimes.base import CLASSIFICATION, BaseRuntime, Packaged, RuntimeContext
from finalmile.runtimes.selection import BATCH_ROWS, fastest, measure
from finalmile.schema import Column

TARGET_OPSET = 17
_ML_OPSET = 3


@dataclass
class Conversion:
    """What happened when we tried ONNX: the evidence behind serving (or not serving) through ONNX Runtime."""

    status: str  # "converted" | "mismatch" | "failed" | "skipped"
    reason: str
    converter: str = ""
    rows_checked: int = 0
    label_mismatches: int = 0
    max_abs_diff: float = 0.0
    rtol: float = 0.0
    atol: float = 0.0
    sample: str = ""  # "given" | "drawn from the schema"
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)
    timings_us: dict[str, dict[str, float]] = field(default_factory=dict)
    """Median µs per call of each matching runtime at each measured batch size (`runtimes.selection`)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def convert(
    packaged: Packaged, sample: pa.Table | None, workdir: Path, settings: FinalmileSettings
) -> tuple[Conversion, Path | None]:
    """Convert `packaged.native` to ONNX and check it against the native runtime on the sample."""
    started = time.perf_counter()
    inputs = packaged.schema.inputs or []
    non_numeric = [c.name for c in inputs if c.dtype in ("string", "bool") or c.shape]
    if not inputs or non_numeric:
        why = "the model's inputs are unknown" if not inputs else f"non-numeric input columns: {', '.join(non_numeric)}"
        return Conversion("skipped", f"kept native: {why}"), None
    try:
        model, converter = _to_onnx(packaged, len(inputs))
    except Exception as exc:  # converters raise many types for unsupported operators
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Conversion(
            "failed", f"conversion failed: {type(exc).__name__}: {message[:400]}", seconds=time.perf_counter() - started
        ), None
    path = workdir / "converted.onnx"
    path.write_bytes(model.SerializeToString())
    check_rows, origin = (
        (sample, "given")
        if sample is not None
        else (draw_sample(inputs, settings.parity_rows), "drawn from the schema")
    )
    verdict = check_parity(packaged, path, check_rows, settings)
    verdict.converter = converter
    verdict.sample = origin
    verdict.seconds = round(time.perf_counter() - started, 3)
    return verdict, (path if verdict.status == "converted" else None)


def _to_onnx(packaged: Packaged, n_features: int) -> tuple[onnx.ModelProto, str]:
    native = packaged.native
    if packaged.framework == "sklearn":
        from skl2onnx import convert_sklearn
        from skl2onnx.common.data_types import FloatTensorType

        model = convert_sklearn(
            native,
            initial_types=[("input", FloatTensorType([None, n_features]))],
            options={"zipmap": False} if packaged.task == CLASSIFICATION else None,
            target_opset={"": TARGET_OPSET, "ai.onnx.ml": _ML_OPSET},
        )
        return model, f"skl2onnx {package_version('skl2onnx')}"
    from onnxmltools.convert.common.data_types import FloatTensorType as MLFloatTensorType

    initial = [("input", MLFloatTensorType([None, n_features]))]
    if packaged.framework == "xgboost":
        from onnxmltools import convert_xgboost

        # onnxmltools reads features as f0, f1, …; our input column order already is the booster's feature order.
        unnamed = native.copy()
        unnamed.feature_names = None
        return convert_xgboost(unnamed, initial_types=initial), (f"onnxmltools {package_version('onnxmltools')}")
    from onnxmltools import convert_lightgbm

    return convert_lightgbm(native, initial_types=initial, zipmap=False), (
        f"onnxmltools {package_version('onnxmltools')}"
    )


def draw_sample(inputs: list[Column], rows: int, seed: int = 0) -> pa.Table:
    """Synthetic rows for the parity check when no sample was given: standard normal values, wide tails included."""
    rng = np.random.default_rng(seed)
    columns = {}
    for c in inputs:
        values = rng.standard_normal(rows) * rng.choice([1.0, 10.0, 100.0], size=rows)
        columns[c.name] = pa.array(values.astype(c.dtype) if c.dtype.startswith(("float", "int")) else values)
    return pa.table(columns)


def check_parity(packaged: Packaged, onnx_path: Path, sample: pa.Table, settings: FinalmileSettings) -> Conversion:
    """Run both runtimes on the sample: labels must be equal, probabilities/predictions close (numpy.isclose)."""
    from finalmile.runtimes import runtime_class
    from finalmile.runtimes.onnx import OnnxRuntime

    schema = packaged.schema
    native: BaseRuntime = runtime_class(packaged.framework)(
        RuntimeContext(packaged.artifact, schema, packaged.task, packaged.classes, settings)
    )
    converted = OnnxRuntime(RuntimeContext(onnx_path, schema, packaged.task, packaged.classes, settings))
    expected = native.predict(sample)
    try:
        got = converted.predict(sample)
    except Exception as exc:
        return Conversion("failed", f"the converted model does not run: {type(exc).__name__}: {exc}")
    rtol, atol = settings.parity_rtol, settings.parity_atol
    mismatches = 0
    if "label" in expected.column_names:
        mismatches = int(np.sum(_values(expected, "label") != _values(got, "label")))
    numeric = "probabilities" if "probabilities" in expected.column_names else "prediction"
    max_diff = 0.0
    close = True
    if numeric in expected.column_names:
        a, b = _values(expected, numeric), _values(got, numeric)
        max_diff = float(np.max(np.abs(a - b))) if a.size else 0.0
        close = bool(np.all(np.isclose(b, a, rtol=rtol, atol=atol)))
    common = {
        "rows_checked": sample.num_rows,
        "label_mismatches": mismatches,
        "max_abs_diff": max_diff,
        "rtol": rtol,
        "atol": atol,
    }
    if mismatches or not close:
        what = []
        if mismatches:
            what.append(f"{mismatches} of {sample.num_rows} labels differ")
        if not close:
            what.append(f"{numeric} differ by up to {max_diff:.3g} (tolerance {atol:g} + {rtol:g}·|native|)")
        return Conversion("mismatch", "kept native: ONNX output mismatch: " + "; ".join(what), **common)
    timings = measure({packaged.framework: native, "onnx": converted}, sample)
    return Conversion("converted", choice_reason(timings, sample.num_rows), **common, timings_us=timings)


def choice_reason(timings: dict[str, dict[str, float]], rows: int) -> str:
    """Which runtime serves which batch sizes, and the measured times behind it."""
    parts = []
    for size in BATCH_ROWS:
        winner = fastest(timings, size)
        others = ", ".join(f"{n} {t[str(size)]:,.0f} µs" for n, t in timings.items() if n != winner)
        parts.append(f"{size} rows: {winner} ({timings[winner][str(size)]:,.0f} µs vs {others})")
    return f"outputs match on {rows} rows; fastest by measurement at " + "; ".join(parts)


def _values(table: pa.Table, name: str) -> np.ndarray:
    return column_numpy(table.column(name))
