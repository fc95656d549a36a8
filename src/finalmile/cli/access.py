"""`finalmile admin|tokens|users|workspaces`: who may do what, run on the server's machine against its store.

These commands open the store directly (like the server does), so whoever can run them already holds the store's
rights; a token's secret goes to stdout alone, so `export FINALMILE_TOKEN=$(finalmile admin init)` works.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console, errors
from finalmile.config import parse_duration

admin_app = typer.Typer(help="Set up access control: the first owner token.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their role in a workspace.", no_args_is_help=True)
workspaces_app = typer.Typer(
    help="Workspaces: teams whose models, pipelines and logs are kept apart.", no_args_is_help=True
)

_Workspace = Annotated[str, typer.Option(help="The workspace.")]


@admin_app.command("init")
def init(user: Annotated[str, typer.Option(help="The first owner's user name.")] = "admin") -> None:
    """Make the first owner and print their token, once. Refused when any token exists."""
    with client_from_env() as client:
        record, secret = client.services.init_access(user)
    errors.print(f"owner token {record.id} for {record.user} in workspace {record.workspace} (shown once):")
    print(secret)


@tokens_app.command("create")
def create_token(
    role: Annotated[str, typer.Option(help="viewer, editor or owner.")],
    workspace: _Workspace = "default",
    user: Annotated[str, typer.Option(help="Whose token: it never acts above their role.")] = "admin",
    name: Annotated[str, typer.Option(help="A label for `tokens list`.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h (default: none).")] = None,
) -> None:
    """Create a token; its secret is printed once, on stdout."""
    lifetime = timedelta(seconds=parse_duration(expires, "expires")) if expires else None
    with client_from_env() as client:
        record, secret = client.services.create_token(user, workspace, role, name, lifetime)
    until = f", expires {record.expires_at:%Y-%m-%d %H:%M} UTC" if record.expires_at else ""
    errors.print(f"{record.role} token {record.id} for {record.user} in workspace {record.workspace}{until}:")
    print(secret)


@tokens_app.command("list")
def list_tokens(workspace: Annotated[str | None, typer.Option(help="Only this workspace.")] = None) -> None:
    """Tokens with their role, expiry and last use (never their secret)."""
    with client_from_env() as client:
        tokens = client.services.access.tokens(workspace)
    table = Table("id", "prefix", "name", "user", "workspace", "role", "created (UTC)", "expires", "last used", "state")
    for t in tokens:
        state = "revoked" if t.revoked_at else "active"
        table.add_row(
            str(t.id),
            t.prefix + "…",
            t.name,
            t.user,
            t.workspace,
            t.role,
            f"{t.created_at:%Y-%m-%d %H:%M}",
            f"{t.expires_at:%Y-%m-%d %H:%M}" if t.expires_at else "never",
            f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never",
            state,
        )
    console.print(table)


@tokens_app.command("revoke")
def revoke_token(token_id: Annotated[int, typer.Argument(help="The token's id (tokens list).")]) -> None:
    """Revoke a token: servers refuse it within seconds."""
    with client_from_env() as client:
        record = client.services.revoke_token(token_id)
    console.print(f"token {record.id} ({record.name}) revoked")


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="viewer, editor or owner.")],
    workspace: _Workspace = "default",
) -> None:
    """Add a user to a workspace with a role (or change their role there)."""
    with client_from_env() as client:
        member = client.services.set_member(name, workspace, role)
    console.print(f"{member.user} is {member.role} in workspace {member.workspace}")


@users_app.command("remove")
def remove_user(name: Annotated[str, typer.Argument(help="User name.")], workspace: _Workspace = "default") -> None:
    """Remove a user from a workspace (their tokens there stop working)."""
    with client_from_env() as client:
        client.services.remove_member(name, workspace)
    console.print(f"{name} removed from workspace {workspace}")


@users_app.command("list")
def list_users(workspace: _Workspace = "default") -> None:
    """The members of a workspace and their roles."""
    with client_from_env() as client:
        members = client.services.access.members(workspace)
    table = Table("user", "role")
    for m in members:
        table.add_row(m.user, m.role)
    console.print(table)


@workspaces_app.command("create")
def create_workspace(
    name: Annotated[str, typer.Argument(help="Workspace name.")],
    owner: Annotated[str, typer.Option(help="Its first owner.")] = "admin",
) -> None:
    """Create a workspace with a first owner."""
    with client_from_env() as client:
        client.services.create_workspace(name)
        client.services.set_member(owner, name, "owner")
    console.print(f"workspace {name} created; {owner} owns it")


@workspaces_app.command("list")
def list_workspaces() -> None:
    """Every workspace."""
    with client_from_env() as client:
        for name in client.services.access.workspaces():
            console.print(name)
