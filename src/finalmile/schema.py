"""Input and output schemas: column names, types and per-row shapes, and the validation that runs before a model.

A column's `shape` is the shape of one row's value: `()` for a scalar, `(k,)` or more for a tensor, which travels as
an Arrow fixed-size-list column of `prod(shape)` values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from finalmile.arrow.frames import list_matrix, wrap_numpy
from finalmile.errors import SchemaError


def arrow_type(dtype: str) -> pa.DataType:
    """The Arrow type of a dtype name (`float32`, `int64`, `bool`, `string`, …)."""
    return pa.type_for_alias("bool" if dtype == "bool" else dtype)


def dtype_name(t: pa.DataType) -> str:
    """The dtype name of an Arrow type, numpy-style (`float32`, not Arrow's `float`)."""
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_integer(t) or pa.types.is_floating(t):
        return np.dtype(t.to_pandas_dtype()).name
    return str(t)


class Column(BaseModel):
    """One named, typed input or output column (a tensor when `shape` is set)."""

    name: str
    dtype: str
    shape: tuple[int, ...] = ()
    nullable: bool = False
    """Whether rows may leave it empty (JSON null, a missing key, NaN from pandas); set when the sample had gaps."""

    def arrow_type(self) -> pa.DataType:
        """Scalars map to their type, tensors to a fixed-size list of `prod(shape)` values."""
        base = arrow_type(self.dtype)
        return pa.list_(base, math.prod(self.shape)) if self.shape else base

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]" if self.shape else self.dtype


class Schema(BaseModel):
    """What a model takes and returns. `inputs=None` means the model declared nothing: any table is passed through."""

    inputs: list[Column] | None = None
    outputs: list[Column] = Field(default_factory=list)

    @classmethod
    def from_arrow(cls, inputs: pa.Schema | None, outputs: pa.Schema | None = None) -> Schema:
        return cls(
            inputs=None if inputs is None else [column_from_field(f) for f in inputs],
            outputs=[] if outputs is None else [column_from_field(f) for f in outputs],
        )

    def input_names(self) -> list[str]:
        return [c.name for c in self.inputs or []]

    def input_arrow_schema(self) -> pa.Schema:
        return pa.schema([(c.name, c.arrow_type()) for c in self.inputs or []])


def column_from_field(field: pa.Field) -> Column:
    """A Column from an Arrow field; fixed-size lists become tensors of shape (k,)."""
    t = field.type
    if pa.types.is_fixed_size_list(t):
        return Column(name=field.name, dtype=dtype_name(t.value_type), shape=(t.list_size,))
    return Column(name=field.name, dtype=dtype_name(t))


class SchemaValidator:
    """Conforms tables to a schema's inputs: selects, orders and safely casts columns, or raises `SchemaError`.

    Built once per loaded model so that the common case (the caller already sends the right types) costs one schema
    comparison on the hot path.
    """

    def __init__(self, schema: Schema) -> None:
        self.columns = schema.inputs
        self.expected = schema.input_arrow_schema() if schema.inputs is not None else None
        numeric = bool(self.columns) and all(
            not c.shape and c.dtype not in ("string", "bool") for c in self.columns or []
        )
        self.tensor_width = len(self.columns or []) if numeric else None
        self._plans: list[tuple[pa.Schema, Any]] = []
        """What to do with tables of each schema seen lately, newest first: comparing schemas is one C++ call,
        where working the plan out again (names, types, widening) costs tens of microseconds per request."""
        self._required = [c.name for c in self.columns or [] if not c.nullable and not c.shape]

    def is_tensor_form(self, table: pa.Table) -> bool:
        """One [n, k] numeric tensor column standing for k numeric scalar inputs: how V2 clients send tabular rows.

        Accepted as it is (models that take a matrix read it without a copy); runtimes that need named columns
        call `expand_tensor`.
        """
        if self.tensor_width is None or table.num_columns != 1:
            return False
        t = table.schema.field(0).type
        return (
            pa.types.is_fixed_size_list(t)
            and t.list_size == self.tensor_width
            and (pa.types.is_floating(t.value_type) or pa.types.is_integer(t.value_type))
        )

    def conform(self, table: pa.Table) -> pa.Table:
        if self.expected is None or self.columns is None:
            return table
        schema = table.schema
        plan = next((plan for known, plan in self._plans if schema.equals(known)), _UNKNOWN)
        if plan is _UNKNOWN:
            plan = self._plan(table)
            self._plans = [(schema, plan), *self._plans[: _PLANS_KEPT - 1]]  # clients send few distinct schemas
        if plan is _TENSOR:
            return table
        if plan is None:
            return self.refuse_gaps(self._diagnose(table))
        return self.refuse_gaps(table if plan is _AS_IS else table.select(plan))

    def _plan(self, table: pa.Table) -> Any:
        """`_TENSOR` or `_AS_IS` (take the table as it is), the column indices to select (the right columns in
        another order or with extras, each the declared type or one that widens to it safely), or None: cast
        column by column, naming every problem."""
        assert self.expected is not None
        if self.is_tensor_form(table):
            return _TENSOR
        names = self.expected.names
        if table.schema.equals(self.expected):
            return _AS_IS
        if not set(names) <= set(table.column_names) or len(set(table.column_names)) != table.num_columns:
            return None
        indices = [table.schema.get_field_index(n) for n in names]
        # float32 where float64 is declared (how V2 clients send FP32), small ints where floats are: always safe,
        # and every model converts its input matrix anyway; casting column by column costs ~1 ms.
        if not self._only_widening(table.select(indices).schema):
            return None
        return _AS_IS if indices == list(range(table.num_columns)) else indices

    def refuse_gaps(self, table: pa.Table) -> pa.Table:
        """Empty values (JSON null, a missing key) where the schema does not allow them, named by row and column."""
        if not self._required or not _may_have_nulls(table, numeric=self.tensor_width is not None):
            return table
        problems = []
        for name in self._required:
            column = table.column(name)
            if column.null_count:
                row = pc.index(pc.is_null(column), True).as_py()
                problems.append(
                    f"row {row}, column '{name}': missing or null ({column.null_count} rows), and the schema does "
                    "not mark it nullable"
                )
        if problems:
            raise SchemaError(problems)
        return table

    def _only_widening(self, schema: pa.Schema) -> bool:
        for field, target in zip(schema, self.expected or [], strict=True):
            source, wanted = field.type, target.type
            if source.equals(wanted):
                continue
            if pa.types.is_floating(wanted) and (
                (pa.types.is_integer(source) and source.bit_width <= 32)
                or (pa.types.is_floating(source) and source.bit_width <= wanted.bit_width)
            ):
                continue
            return False
        return True

    def _diagnose(self, table: pa.Table) -> pa.Table:
        assert self.columns is not None and self.expected is not None
        problems: list[str] = []
        arrays: list[pa.ChunkedArray] = []
        for column in self.columns:
            if column.name not in table.column_names:
                if column.nullable and not column.shape:  # a column rows may leave empty may be left out whole
                    arrays.append(pa.chunked_array([pa.nulls(table.num_rows, column.arrow_type())]))
                else:
                    problems.append(f"column '{column.name}': missing (expected {column.describe()})")
                continue
            arr, problem = _cast_column(table.column(column.name), column)
            if problem:
                problems.append(f"column '{column.name}': {problem}")
            else:
                arrays.append(arr)
        if problems:
            raise SchemaError(problems)
        return pa.Table.from_arrays(arrays, schema=self.expected)


_TENSOR, _AS_IS, _UNKNOWN = object(), object(), object()
_PLANS_KEPT = 8


def _may_have_nulls(table: pa.Table, numeric: bool) -> bool:
    """False when no column holds a null. A one-chunk table of a schema whose inputs are all numeric (the only
    columns a conformed table then has) is asked in one C++ call (its conversion to a tensor refuses nulls), where
    asking each column costs about half a microsecond per column; any other failure falls back to asking them."""
    batches = table.to_batches()
    if numeric and len(batches) == 1:
        try:
            batches[0].to_tensor(null_to_nan=False)
            return False
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return True
    return any(column.null_count for column in table.itercolumns())


def _cast_column(arr: pa.ChunkedArray, column: Column) -> tuple[pa.ChunkedArray, str | None]:
    source = arr.type
    target = column.arrow_type()
    if source.equals(target):
        return arr, None
    if column.shape:
        return _cast_tensor(arr, column, target)
    return _cast_scalar(arr, column.dtype, target)


def _cast_scalar(arr: pa.ChunkedArray, dtype: str, target: pa.DataType) -> tuple[pa.ChunkedArray, str | None]:
    source = arr.type
    got = dtype_name(source)
    if pa.types.is_null(source):
        return arr.cast(target), None
    if dtype == "string":
        if pa.types.is_large_string(source):
            return arr.cast(target), None
        return arr, f"expected string, got {got}"
    if pa.types.is_list(source) or pa.types.is_fixed_size_list(source) or pa.types.is_large_list(source):
        return arr, f"expected a scalar {dtype}, got a list"
    numeric_target = pa.types.is_integer(target) or pa.types.is_floating(target)
    numeric_source = pa.types.is_integer(source) or pa.types.is_floating(source)  # true is not a number
    if not (numeric_target and numeric_source) and not (pa.types.is_boolean(target) and pa.types.is_boolean(source)):
        return arr, f"expected {dtype}, got {got}"
    try:
        return arr.cast(target, safe=True), None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr, f"expected {dtype}, got {got} values that cannot be cast safely"


def _cast_tensor(arr: pa.ChunkedArray, column: Column, target: pa.DataType) -> tuple[pa.ChunkedArray, str | None]:
    source = arr.type
    size = math.prod(column.shape)
    if not (pa.types.is_list(source) or pa.types.is_large_list(source) or pa.types.is_fixed_size_list(source)):
        return arr, f"expected a tensor of shape {column.shape} ({column.dtype}), got scalar {dtype_name(source)}"
    if pa.types.is_fixed_size_list(source):
        if source.list_size != size:
            return arr, f"expected shape {column.shape}, got rows of {source.list_size} values"
    else:
        lengths = pc.list_value_length(arr)
        lo, hi = pc.min_max(lengths).values()
        if lo.is_valid and (lo.as_py() != size or hi.as_py() != size):
            return arr, f"expected shape {column.shape}, got rows of {lo.as_py()} to {hi.as_py()} values"
    values_type = source.value_type
    if not (pa.types.is_integer(values_type) or pa.types.is_floating(values_type)):
        return arr, f"expected {column.dtype} values, got {dtype_name(values_type)}"
    try:
        chunks = [
            pa.FixedSizeListArray.from_arrays(c.flatten().cast(target.value_type, safe=True), size) for c in arr.chunks
        ]
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return arr, f"expected {column.dtype} values, got {dtype_name(values_type)} that cannot be cast safely"
    return pa.chunked_array(chunks, type=target), None


def expand_tensor(table: pa.Table, schema: Schema, as_served: bool = False) -> pa.Table:
    """The named scalar columns behind a tensor-form table (see `SchemaValidator.is_tensor_form`).

    `as_served` keeps a float tensor's own type where the schema's columns are all floats: the inference log
    stores what the model was served, and widening float32 to float64 doubled the bytes it encodes."""
    tensor = table.column(0)
    chunks = tensor.chunks if isinstance(tensor, pa.ChunkedArray) else [tensor]
    columns = schema.inputs or []
    types = [c.arrow_type() for c in columns]
    served = tensor.type.value_type
    if as_served and pa.types.is_floating(served) and all(pa.types.is_floating(t) for t in types):
        types = [served] * len(types)
    common = types[0].to_pandas_dtype() if types and all(t == types[0] for t in types) else None
    # Transposed chunk by chunk (small, cache-friendly blocks) and converted on the way: each row of `by_column`
    # is one contiguous column, which Arrow then wraps without copying.
    matrices = [list_matrix(c).T for c in chunks] if chunks else [list_matrix(tensor).T]
    by_column = np.empty((matrices[0].shape[0], sum(m.shape[1] for m in matrices)), dtype=common or matrices[0].dtype)
    np.concatenate(matrices, axis=1, out=by_column, casting="same_kind")
    if common is not None:
        arrays = [wrap_numpy(types[0], row) for row in by_column]
    else:
        arrays = [pa.array(by_column[j]).cast(t) for j, t in enumerate(types)]
    return pa.Table.from_arrays(arrays, names=[c.name for c in columns])


def infer_schema(table: pa.Table) -> Schema:
    """A schema whose inputs are exactly the columns of `table` (used for samples); columns with gaps are nullable."""
    schema = Schema.from_arrow(table.schema)
    for column in schema.inputs or []:
        column.nullable = table.column(column.name).null_count > 0
    return schema
