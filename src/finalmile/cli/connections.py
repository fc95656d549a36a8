"""`finalmile connections create|list|delete|keygen`: stored connection details for jobs and streams."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console

connections_app = typer.Typer(
    help="Named connections (PostgreSQL, MariaDB, a directory, a broker); URLs encrypted at rest.", no_args_is_help=True
)


@connections_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Connection name.")],
    type: Annotated[
        str, typer.Option("--type", help="postgres, mariadb, directory, fsspec, nats, redis, rabbitmq, kafka.")
    ],
    connection_url: Annotated[
        str,
        typer.Argument(metavar="URL", help="The URL, password included (stored encrypted under FINALMILE_SECRET_KEY)."),
    ],
) -> None:
    """Store a connection; the URL is encrypted, and shown masked from now on."""
    with client_from_env() as client:
        record = client.create_connection(name, type, connection_url)
    console.print(f"connection {record.name} ({record.type}): {record.url}")


@connections_app.command("list")
def list_connections() -> None:
    """Every connection, passwords masked."""
    with client_from_env() as client:
        records = client.connections()
    table = Table("name", "type", "url", "created by", "created (UTC)")
    for r in records:
        table.add_row(r.name, r.type, r.url, r.created_by, f"{r.created_at:%Y-%m-%d %H:%M}")
    console.print(table)


@connections_app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="Connection name.")]) -> None:
    """Delete a connection."""
    with client_from_env() as client:
        client.delete_connection(name)
    console.print(f"connection {name} deleted")


@connections_app.command("keygen")
def keygen() -> None:
    """Print a new key for FINALMILE_SECRET_KEY (keep it outside the store: whoever has both reads the secrets)."""
    from cryptography.fernet import Fernet

    print(Fernet.generate_key().decode())
