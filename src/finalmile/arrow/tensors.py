"""Named tensors: k numeric columns carried as one [n, k] matrix with their names.

V2 clients send tabular rows as one tensor per feature; decoded into one matrix (`NamedRows`), the pipeline reorders
it to the model's columns in one numpy indexing step instead of building and validating k Arrow columns per request,
and a batch of such requests becomes one Arrow table (`batch_table`), not one per request. Where rows must travel as
Arrow (to a Ray replica), a named tensor is one fixed-size-list column, its names in field metadata.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

import numpy as np
import pyarrow as pa

from finalmile.arrow.frames import list_matrix, tensor_array

NAMED_TENSOR = "__named_columns__"
TENSOR_INPUT = "input"
"""The column a conformed tensor (the model's inputs in its order, one [n, k] matrix) travels in."""


class _Matrix:
    """What both kinds of decoded rows share: an [n, k] numeric `matrix`, one row a row."""

    __slots__ = ()
    matrix: np.ndarray

    @property
    def num_rows(self) -> int:
        return int(self.matrix.shape[0])

    def __len__(self) -> int:
        return self.num_rows


@dataclass(frozen=True, slots=True)
class NamedRows(_Matrix):
    """A request's rows of k named numeric columns, decoded (never empty): numpy until its batch is built."""

    matrix: np.ndarray
    """[n, k], any numeric dtype."""
    names: tuple[str, ...]

    def table(self) -> pa.Table:
        """As Arrow: one named-tensor column (for the paths that carry tables, such as a Ray replica's call)."""
        return named_tensor(self.matrix, list(self.names))


@dataclass(frozen=True, slots=True)
class TensorRows(_Matrix):
    """A request's rows as one numeric [n, k] tensor named `name` (V2's one-tensor body), decoded (never empty):
    numpy until its batch is built."""

    matrix: np.ndarray
    name: str

    def table(self) -> pa.Table:
        return tensor_table(self.matrix, self.name)


Rows: TypeAlias = pa.Table | NamedRows | TensorRows
"""A request's rows as a transport decoded them."""


def as_table(rows: Rows) -> pa.Table:
    return rows if isinstance(rows, pa.Table) else rows.table()


def batch_table(parts: list[pa.Table | np.ndarray]) -> pa.Table:
    """One table of a batch's requests, each a table or a conformed tensor (a matrix in the model's column order):
    matrices of one dtype are stacked by numpy and wrapped once, anything else joined by Arrow (one chunk per
    column: every later step would otherwise walk a chunk per request)."""
    matrices = [p for p in parts if isinstance(p, np.ndarray)]
    if len(matrices) == len(parts) and len({m.dtype for m in matrices}) == 1:
        return tensor_table(matrices[0] if len(matrices) == 1 else np.concatenate(matrices))
    tables = [p if isinstance(p, pa.Table) else tensor_table(p) for p in parts]
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables, promote_options="permissive").combine_chunks()


def tensor_table(matrix: np.ndarray, name: str = TENSOR_INPUT) -> pa.Table:
    """A matrix as a one-column tensor table (by default, a conformed tensor as a model step reads it)."""
    return pa.Table.from_arrays([tensor_array(np.ascontiguousarray(matrix))], names=[name])


def named_tensor(matrix: np.ndarray, names: list[str]) -> pa.Table:
    """Rows of k named numeric columns as one [n, k] tensor column named `NAMED_TENSOR`."""
    key = (matrix.dtype.str, tuple(names))
    schema = _SCHEMAS.get(key)
    if schema is None:  # clients send few distinct column lists: the schema is made once for each (~12 µs)
        if len(_SCHEMAS) >= _SCHEMAS_KEPT:
            _SCHEMAS.clear()
        field = pa.field(
            NAMED_TENSOR,
            pa.list_(pa.from_numpy_dtype(matrix.dtype), matrix.shape[1]),
            metadata={b"names": "\x1f".join(names).encode()},
        )
        schema = _SCHEMAS[key] = pa.schema([field])
    return pa.Table.from_arrays([tensor_array(np.ascontiguousarray(matrix))], schema=schema)


_SCHEMAS: dict[tuple[str, tuple[str, ...]], pa.Schema] = {}
_SCHEMAS_KEPT = 256


def named_tensor_header(table: pa.Table) -> bytes | None:
    """A named tensor's names as stored (joined by \\x1f), or None for any other table: cheap to compare."""
    if table.num_columns != 1:
        return None
    field = table.schema.field(0)
    if field.name != NAMED_TENSOR or not field.metadata:
        return None
    names: bytes | None = field.metadata.get(b"names")
    return names


def named_tensor_parts(table: Rows) -> tuple[np.ndarray, list[str]] | None:
    """(matrix, names) of named rows or a named tensor, or None for any other table."""
    if isinstance(table, NamedRows):
        return table.matrix, list(table.names)
    if isinstance(table, TensorRows):
        return None
    header = named_tensor_header(table)
    if header is None:
        return None
    return list_matrix(table.column(0)), header.decode().split("\x1f")


def expand_named_tensor(table: Rows) -> pa.Table:
    """Named rows or a named tensor as ordinary named columns (for the paths that need them)."""
    parts = named_tensor_parts(table)
    if parts is None:
        return as_table(table)
    matrix, names = parts
    return pa.Table.from_arrays([pa.array(matrix[:, j]) for j in range(len(names))], names=names)
