"""The SQL surface's sandbox: only the documented views, no file or network access, bounded in time, memory, rows
and bytes.

Walls, each enough alone for what it guards: DuckDB runs with `enable_external_access = false` (only this home's
log and ground-truth folders stay readable, for the views), a memory limit and a locked configuration; a query must
be one SELECT whose parse tree names no table function and no table but the views and its own CTEs, and whose bound
plan scans nothing but the views' sources and harmless table functions (a CTE named like a catalog table in one
scope does not make the catalog readable from another); it is interrupted after `timeout_s`, the encoding of its
answer included, and its result refused beyond `max_rows` or `max_bytes`. Every refusal is a 400 naming the limit.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import pyarrow as pa

from finalmile.errors import FinalmileError, QueryError

T = TypeVar("T")
VIEWS = frozenset({"logs", "ground_truth", "models", "pipelines", "audit", "replays"})
"""What a query may read (documented in the README)."""
_HARMLESS_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
_SCANNED = frozenset(
    {"READ_PARQUET", "PARQUET_SCAN", "ARROW_SCAN", "PYTHON_ARROW_SCAN", "RANGE", "GENERATE_SERIES", "UNNEST"}
)
"""What a bound plan may scan: the views' Parquet files and registered tables, and the harmless table functions."""
_REFUSED_FUNCTIONS = frozenset({"getenv", "current_setting"})


@dataclass(frozen=True)
class QueryLimits:
    """How far one query of the SQL surface may go (the `query_*` settings)."""

    timeout_s: float = 30.0
    max_rows: int = 100_000
    max_bytes: int = 64 * 1024 * 1024
    """The answer's size in Arrow (its JSON is of the same order): more is refused, not cut."""
    memory_mb: int = 1024
    """DuckDB's memory limit for the query (its `memory_limit`; nothing spills to disk)."""


def lock_down(conn: duckdb.DuckDBPyConnection, readable: list[Path], limits: QueryLimits) -> None:
    """No file or network access beyond `readable` (the views' own folders), no more memory than `limits` allow,
    and no way to change either back."""
    folders = ", ".join("'" + (str(p).rstrip("/") + "/").replace("'", "''") + "'" for p in readable)
    conn.execute(f"SET memory_limit = '{int(limits.memory_mb)}MB'")
    conn.execute("SET max_temp_directory_size = '0B'")
    conn.execute(f"SET allowed_directories = [{folders}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET autoinstall_known_extensions = false")
    conn.execute("SET autoload_known_extensions = false")
    conn.execute("SET lock_configuration = true")


def check(conn: duckdb.DuckDBPyConnection, sql: str) -> set[str]:
    """Refuse anything but one SELECT over the documented views, naming what was refused; the views it names."""
    try:
        statements = conn.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(f"sql: {_message(exc)}", {"field": "sql"}) from None
    if len(statements) != 1:
        raise QueryError(f"sql: expected exactly one SQL statement, got {len(statements)}", {"field": "sql"})
    if statements[0].type != duckdb.StatementType.SELECT:
        raise QueryError(
            f"sql: queries are read-only: a {statements[0].type.name} statement is refused", {"field": "sql"}
        )
    parsed = json.loads(conn.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()[0][0])
    if parsed.get("error"):
        raise QueryError(f"sql: {parsed.get('error_message', 'cannot be parsed')}", {"field": "sql"})
    ctes = set(_ctes(parsed))
    named = set()
    for kind, name in _references(parsed):
        if kind == "table" and name not in VIEWS and name not in ctes:
            raise QueryError(
                f"sql: '{name}' is not one of the views you can query ({', '.join(sorted(VIEWS))})", {"field": "sql"}
            )
        if kind == "table function" and name not in _HARMLESS_TABLE_FUNCTIONS:
            raise QueryError(f"sql: the table function {name}() is not allowed; query the views", {"field": "sql"})
        if kind == "function" and name in _REFUSED_FUNCTIONS:
            raise QueryError(f"sql: the function {name}() is not allowed", {"field": "sql"})
        if kind == "table" and name in VIEWS:
            named.add(name)
    return named


def check_alone(sql: str) -> None:
    """`check` on a connection of its own, with no view in it: what a query to be saved can be held to before it
    ever runs (its columns are not: a pipeline's logged columns may come later)."""
    conn = duckdb.connect()
    try:
        check(conn, sql)
    finally:
        conn.close()


def check_plan(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse a query whose bound plan scans anything but the views' sources: the parse tree alone cannot tell a
    CTE from a catalog table of the same name in another scope (`duckdb_views`, which shows the views' paths)."""
    try:
        plan = json.loads(conn.execute(f"EXPLAIN (FORMAT JSON) {sql}").fetchall()[0][1])
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_message(exc)}", {"field": "sql"}) from None
    for operator in _operators(plan):
        info = operator.get("extra_info") or {}
        function, table = info.get("Function"), info.get("Table")
        if table or (function and str(function).upper() not in _SCANNED):
            name = str(table or function).lower()
            raise QueryError(
                f"sql: '{name}' is not one of the views you can query ({', '.join(sorted(VIEWS))})", {"field": "sql"}
            )


def run(conn: duckdb.DuckDBPyConnection, sql: str, limits: QueryLimits, encode: Callable[[pa.Table], T]) -> T:
    """Run a checked query and `encode` its answer, the two within `timeout_s` (the query is interrupted; an
    encoding still running then is refused); more than `max_rows` rows or `max_bytes` is refused, not cut."""
    deadline = time.monotonic() + limits.timeout_s
    timer = threading.Timer(limits.timeout_s, conn.interrupt)
    timer.daemon = True
    timer.start()
    try:
        reader = conn.sql(sql).to_arrow_reader(min(limits.max_rows + 1, 100_000))
        batches, rows, size = [], 0, 0
        for batch in reader:
            batches.append(batch)
            rows, size = rows + batch.num_rows, size + batch.nbytes
            if rows > limits.max_rows:
                raise QueryError(
                    f"sql: the result has more than {limits.max_rows:,} rows; aggregate, filter or add LIMIT",
                    {"field": "sql", "limit": "max_rows", "max_rows": limits.max_rows},
                )
            if size > limits.max_bytes:
                raise QueryError(
                    f"sql: the result is larger than {limits.max_bytes / 2**20:g} MiB; select fewer or smaller "
                    "columns, aggregate or add LIMIT",
                    {"field": "sql", "limit": "max_bytes", "max_bytes": limits.max_bytes},
                )
        table = pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise _too_long(limits) from None
    except duckdb.OutOfMemoryException:
        raise QueryError(
            f"sql: the query needed more than its {limits.memory_mb:,} MB of memory; aggregate, filter or add LIMIT",
            {"field": "sql", "limit": "memory_mb", "memory_mb": limits.memory_mb},
        ) from None
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_message(exc)}", {"field": "sql"}) from None
    except (pa.ArrowException, MemoryError) as exc:  # a value beyond Arrow's 2 GiB string limit, say
        raise QueryError(
            f"sql: the result cannot be returned ({_message(exc)}); select smaller values or aggregate",
            {"field": "sql", "limit": "max_bytes", "max_bytes": limits.max_bytes},
        ) from None
    finally:
        timer.cancel()
    return _within(encode, table, deadline, limits)


def _within(encode: Callable[[pa.Table], T], table: pa.Table, deadline: float, limits: QueryLimits) -> T:
    """`encode(table)` in a thread, given up at `deadline`: the answer's size is capped, so the thread ends soon."""
    done: list[T] = []
    failed: list[BaseException] = []

    def work() -> None:
        try:
            done.append(encode(table))
        except BaseException as exc:
            failed.append(exc)

    worker = threading.Thread(target=work, name="finalmile-query-encode", daemon=True)
    worker.start()
    worker.join(max(deadline - time.monotonic(), 0.0))
    if failed:
        if isinstance(failed[0], FinalmileError):
            raise failed[0]
        raise QueryError(
            f"sql: the result cannot be sent: {_message(failed[0])}", {"field": "sql", "limit": "max_bytes"}
        ) from None
    if not done:
        raise _too_long(limits)
    return done[0]


def _too_long(limits: QueryLimits) -> QueryError:
    return QueryError(
        f"sql: the query ran past the {limits.timeout_s:g} s limit and was stopped",
        {"field": "sql", "limit": "timeout_s", "timeout_s": limits.timeout_s},
    )


def _message(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _objects(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in a serialised parse tree or plan, depth first."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _objects(value)
    elif isinstance(node, list):
        for value in node:
            yield from _objects(value)


def _operators(plan: Any) -> Iterator[dict[str, Any]]:
    """The operators of an `EXPLAIN (FORMAT JSON)` plan."""
    return (node for node in _objects(plan) if "name" in node)


def _ctes(tree: Any) -> Iterator[str]:
    for node in _objects(tree):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                yield entry.get("key", "")


def _references(tree: Any) -> Iterator[tuple[str, str]]:
    """(`table` | `table function` | `function`, name) for every reference in a serialised parse tree."""
    for node in _objects(tree):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            yield "table", str(node.get("table_name", ""))
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            yield "table function", str(function.get("function_name", ""))
        elif node.get("class") == "FUNCTION":
            yield "function", str(node.get("function_name", ""))
