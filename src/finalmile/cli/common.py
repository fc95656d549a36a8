"""Pieces the CLI modules share."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)


def client_from_env() -> Any:
    from finalmile.client import Client

    return Client()


def print_table(result: pa.Table, limit: int = 20) -> None:
    table = Table()
    for name in result.column_names:
        table.add_column(name, overflow="fold")  # a narrow terminal wraps long names rather than cutting them
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)
    if result.num_rows > limit:
        console.print(f"… {result.num_rows - limit} more rows; use --output to write them all")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)
