"""Check expressions (`out.score > 0.95 and in.amount > 100`) compiled to vectorised numpy over Arrow columns.

Only a small, safe subset of Python is accepted: names `in.<column>` / `out.<column>`, numbers, strings,
comparisons, `and`/`or`/`not`, and + - * / arithmetic. Anything else is refused when the pipeline is built.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from finalmile.errors import InvalidCheckError

Evaluator = Callable[[pa.Table, pa.Table], np.ndarray]

_COMPARE = {
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITH = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
MAX_CHECK_CHARS = 2_000
"""A check is a rule a person reads on the dashboard; a longer one is a mistake, or an attempt at the parser."""


def compile_check(expression: str) -> tuple[Evaluator, set[str], set[str]]:
    """An evaluator returning one bool per row, and the input and output columns it reads."""
    if len(expression) > MAX_CHECK_CHARS:
        raise InvalidCheckError(f"check of {len(expression):,} characters: at most {MAX_CHECK_CHARS:,}")
    source = expression.replace("in.", "in_.")  # `in` is a keyword
    inputs: set[str] = set()
    outputs: set[str] = set()
    try:
        fn = _compile(ast.parse(source, mode="eval").body, expression, inputs, outputs)
    except SyntaxError as exc:
        raise InvalidCheckError(f"check {expression!r}: not a valid expression ({exc.msg})") from None
    except (RecursionError, MemoryError):  # Python's parser, or ours, on thousands of nested parts
        raise InvalidCheckError(f"check {expression[:80]!r}…: nested too deeply") from None

    def evaluate(inputs_table: pa.Table, outputs_table: pa.Table) -> np.ndarray:
        result = np.asarray(fn(inputs_table, outputs_table))
        return np.broadcast_to(result.astype(bool), (outputs_table.num_rows,))

    return evaluate, inputs, outputs


def _compile(node: ast.AST, text: str, inputs: set[str], outputs: set[str]) -> Callable[[pa.Table, pa.Table], Any]:
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("in_", "out"):
        column = node.attr
        if node.value.id == "in_":
            inputs.add(column)
            return lambda i, o: _column(i, column)
        outputs.add(column)
        return lambda i, o: _column(o, column)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool)):
        value = node.value
        return lambda i, o: value
    if isinstance(node, ast.Compare):
        parts = [_compile(node.left, text, inputs, outputs)] + [
            _compile(c, text, inputs, outputs) for c in node.comparators
        ]
        ops: list[Callable[[Any, Any], Any]] = []
        for cmp in node.ops:
            if type(cmp) not in _COMPARE:
                raise InvalidCheckError(f"check {text!r}: operator {type(cmp).__name__} is not allowed")
            ops.append(_COMPARE[type(cmp)])

        def compare(i: pa.Table, o: pa.Table) -> Any:
            values = [p(i, o) for p in parts]
            result: Any = True
            for compare_op, left, right in zip(ops, values, values[1:], strict=False):
                result = np.logical_and(result, compare_op(left, right))
            return result

        return compare
    if isinstance(node, ast.BoolOp):
        parts = [_compile(v, text, inputs, outputs) for v in node.values]
        combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
        return lambda i, o: _reduce(combine, [p(i, o) for p in parts])
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        inner = _compile(node.operand, text, inputs, outputs)
        if isinstance(node.op, ast.Not):
            return lambda i, o: np.logical_not(inner(i, o))
        return lambda i, o: -inner(i, o)
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITH:
        left, right, op = (
            _compile(node.left, text, inputs, outputs),
            _compile(node.right, text, inputs, outputs),
            _ARITH[type(node.op)],
        )
        return lambda i, o: op(left(i, o), right(i, o))
    raise InvalidCheckError(
        f"check {text!r}: only in.<column>, out.<column>, numbers, comparisons, and/or/not and arithmetic are allowed"
    )


def _reduce(fn: Any, values: list[Any]) -> Any:
    result = values[0]
    for value in values[1:]:
        result = fn(result, value)
    return result


def _column(table: pa.Table, name: str) -> np.ndarray:
    if name not in table.column_names:
        raise InvalidCheckError(
            f"check refers to column '{name}', which is not there (have: {', '.join(table.column_names)})"
        )
    return table.column(name).to_numpy()
