"""The SQL surface's sandbox: only the documented views, no file or network access, a time limit and a row cap.

Three walls, each enough alone for what it guards: DuckDB runs with `enable_external_access = false` (only this
home's log and ground-truth folders stay readable, for the views) and a locked configuration; a query must be one
SELECT whose parse tree names no table function and no table but the views and its own CTEs; and it is
interrupted after `timeout_s`, its result refused beyond `max_rows`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from finalmile.errors import QueryError

VIEWS = frozenset({"logs", "ground_truth", "models", "pipelines", "audit"})
"""What a query may read (documented in the README)."""
_HARMLESS_TABLE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
_REFUSED_FUNCTIONS = frozenset({"getenv", "current_setting"})


def lock_down(conn: duckdb.DuckDBPyConnection, readable: list[Path]) -> None:
    """No file or network access beyond `readable` (the views' own folders), and no way to turn that back on."""
    folders = ", ".join("'" + (str(p).rstrip("/") + "/").replace("'", "''") + "'" for p in readable)
    conn.execute(f"SET allowed_directories = [{folders}]")
    conn.execute("SET enable_external_access = false")
    conn.execute("SET autoinstall_known_extensions = false")
    conn.execute("SET autoload_known_extensions = false")
    conn.execute("SET lock_configuration = true")


def check(conn: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Refuse anything but one SELECT over the documented views, naming what was refused."""
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
    for kind, name in _references(parsed):
        if kind == "table" and name not in VIEWS and name not in ctes:
            raise QueryError(
                f"sql: '{name}' is not one of the views you can query ({', '.join(sorted(VIEWS))})", {"field": "sql"}
            )
        if kind == "table function" and name not in _HARMLESS_TABLE_FUNCTIONS:
            raise QueryError(f"sql: the table function {name}() is not allowed; query the views", {"field": "sql"})
        if kind == "function" and name in _REFUSED_FUNCTIONS:
            raise QueryError(f"sql: the function {name}() is not allowed", {"field": "sql"})


def check_alone(sql: str) -> None:
    """`check` on a connection of its own, with no view in it: what a query to be saved can be held to before it
    ever runs (its columns are not: a pipeline's logged columns may come later)."""
    conn = duckdb.connect()
    try:
        check(conn, sql)
    finally:
        conn.close()


def run(conn: duckdb.DuckDBPyConnection, sql: str, timeout_s: float, max_rows: int) -> pa.Table:
    """Run a checked query, interrupted after `timeout_s`; more than `max_rows` rows is refused, not cut."""
    timer = threading.Timer(timeout_s, conn.interrupt)
    timer.daemon = True
    timer.start()
    try:
        reader = conn.sql(sql).to_arrow_reader(min(max_rows + 1, 100_000))
        batches, rows = [], 0
        for batch in reader:
            batches.append(batch)
            rows += batch.num_rows
            if rows > max_rows:
                raise QueryError(
                    f"sql: the result has more than {max_rows:,} rows; aggregate, filter or add LIMIT",
                    {"field": "sql", "max_rows": max_rows},
                )
        return pa.Table.from_batches(batches, schema=reader.schema)
    except duckdb.InterruptException:
        raise QueryError(
            f"sql: the query ran past the {timeout_s:g} s limit and was stopped", {"field": "sql"}
        ) from None
    except duckdb.Error as exc:
        raise QueryError(f"SQL error: {_message(exc)}", {"field": "sql"}) from None
    finally:
        timer.cancel()


def _message(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _ctes(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map", []):
                yield entry.get("key", "")
        for value in node.values():
            yield from _ctes(value)
    elif isinstance(node, list):
        for value in node:
            yield from _ctes(value)


def _references(node: Any) -> Iterator[tuple[str, str]]:
    """(`table` | `table function` | `function`, name) for every reference in a serialised parse tree."""
    if isinstance(node, dict):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            yield "table", str(node.get("table_name", ""))
        elif kind == "TABLE_FUNCTION":
            function = node.get("function") or {}
            yield "table function", str(function.get("function_name", ""))
        elif node.get("class") == "FUNCTION":
            yield "function", str(node.get("function_name", ""))
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)
