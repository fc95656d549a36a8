"""Pieces the CLI modules share, and what makes every command speak to a server: `--url`/`FINALMILE_URL` and
`--token`/`FINALMILE_TOKEN` are added to each command by `with_server_options`, and `client_from_env` gives the
command a remote `Client` when a URL is set, the embedded one on the local store otherwise."""

from __future__ import annotations

import functools
import inspect
from contextvars import ContextVar
from typing import Annotated, Any

import pyarrow as pa
import typer
from rich.console import Console
from rich.table import Table

console = Console()
errors = Console(stderr=True)

LOCAL_ONLY = frozenset(
    {"serve", "demo", "admin init", "workspaces create", "workspaces list", "predict", "version", "connections keygen"}
)
"""Commands about this machine's store or process: the server itself, the demo, setting up a store's access and
workspaces, predicting with a model in this process, this install's version, making a key."""

_server: ContextVar[tuple[str | None, str | None]] = ContextVar("server", default=(None, None))


def client_from_env(workspace: str | None = None) -> Any:
    """The client a command works with: remote when `--url` (or `FINALMILE_URL`) is given, else embedded on the
    local store (in `workspace`, where a command names one)."""
    from finalmile.client import Client

    url, token = _server.get()
    if url:
        if workspace is not None:
            from finalmile.errors import BadRequestError

            raise BadRequestError("--workspace: a server's token already names its workspace; leave it out")
        return Client(url=url, token=token)
    return Client(workspace=workspace)


def serving(client: Any) -> Any:
    """The client, with this process serving what the store deploys when it is the embedded one (a server
    already does)."""
    services = getattr(client, "services", None)
    if services is not None:
        services.sync()
    return client


_URL = Annotated[
    str | None, typer.Option("--url", envvar="FINALMILE_URL", help="A finalmile server to work on (FINALMILE_URL).")
]
_TOKEN = Annotated[str | None, typer.Option("--token", envvar="FINALMILE_TOKEN", help="Its API token.")]


def with_server_options(app: typer.Typer, prefix: str = "") -> typer.Typer:
    """Give every command of `app` but the local ones `--url` and `--token`, read before the command runs."""
    for info in app.registered_commands:
        assert info.callback is not None
        path = prefix + (info.name or info.callback.__name__.replace("_", "-"))
        if path not in LOCAL_ONLY:
            info.callback = _against_server(info.callback)
    for group in app.registered_groups:
        assert group.typer_instance is not None
        with_server_options(group.typer_instance, f"{prefix}{group.name} ")
    return app


def _against_server(callback: Any) -> Any:
    @functools.wraps(callback)
    def run(*args: Any, url: str | None = None, token: str | None = None, **kwargs: Any) -> Any:
        chosen = _server.set((url, token))
        try:
            return callback(*args, **kwargs)
        finally:
            _server.reset(chosen)

    signature = inspect.signature(callback, eval_str=True)  # typer reads a given signature as it is
    extra = [
        inspect.Parameter("url", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_URL),
        inspect.Parameter("token", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=_TOKEN),
    ]
    run.__signature__ = signature.replace(parameters=[*signature.parameters.values(), *extra])  # type: ignore[attr-defined]
    run.__annotations__ = {**callback.__annotations__, "url": _URL, "token": _TOKEN}
    return run


def print_table(result: pa.Table, limit: int = 20) -> None:
    table = Table()
    for name in result.column_names:
        table.add_column(name, overflow="fold")  # a narrow terminal wraps long names rather than cutting them
    for row in result.slice(0, limit).to_pylist():
        table.add_row(*(_cell(v) for v in row.values()))
    console.print(table)
    if result.num_rows > limit:
        console.print(f"… {result.num_rows - limit} more rows; use --output to write them all")


def print_frame(frame: Any, limit: int = 20) -> None:
    """A pandas DataFrame (what the verbs return for tables) as a table."""
    print_table(pa.Table.from_pandas(frame, preserve_index=False), limit)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return "[" + ", ".join(_cell(v) for v in value) + "]"
    return str(value)
