"""`finalmile admin|tokens|users|workspaces`: who may do what.

`admin init` and `workspaces` open the store directly (like the server does), so whoever can run them already
holds the store's rights. `tokens` and `users` do that too without `--url`; with it they act in the token's
workspace, as its owner. A token's secret goes to stdout alone, so `export FINALMILE_TOKEN=$(finalmile admin init)`
works.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console, errors

admin_app = typer.Typer(help="Set up access control: the first owner token.", no_args_is_help=True)
tokens_app = typer.Typer(help="API tokens: create (shown once), list, revoke.", no_args_is_help=True)
users_app = typer.Typer(help="Users and their role in a workspace.", no_args_is_help=True)
workspaces_app = typer.Typer(
    help="Workspaces: teams whose models, pipelines and logs are kept apart.", no_args_is_help=True
)

_Workspace = Annotated[
    str | None, typer.Option(help="The workspace (locally; default: default). A server's token names its own.")
]


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
    workspace: _Workspace = None,
    user: Annotated[
        str | None, typer.Option(help="Whose token (default: yours; locally, admin). It never acts above their role.")
    ] = None,
    name: Annotated[str, typer.Option(help="A label for `tokens list`.")] = "",
    expires: Annotated[str | None, typer.Option(help="Lifetime, e.g. 30d or 12h (default: none).")] = None,
) -> None:
    """Create a token; its secret is printed once, on stdout."""
    with client_from_env(workspace) as client:
        if user is None and hasattr(client, "services"):
            user = "admin"  # the first owner `admin init` made, not this machine's login
        record = client.create_token(role, name, expires, user)
    until = f", expires {record['expires_at']:%Y-%m-%d %H:%M} UTC" if record["expires_at"] else ""
    errors.print(
        f"{record['role']} token {record['id']} for {record['user']} in workspace {record['workspace']}{until}:"
    )
    print(record["token"])


@tokens_app.command("list")
def list_tokens(workspace: _Workspace = None) -> None:
    """A workspace's tokens with their role, expiry and last use (never their secret)."""
    with client_from_env(workspace) as client:
        tokens = client.tokens()
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
def revoke_token(
    token_id: Annotated[int, typer.Argument(help="The token's id (tokens list).")], workspace: _Workspace = None
) -> None:
    """Revoke a token: servers refuse it within seconds."""
    with client_from_env(workspace) as client:
        record = client.revoke_token(token_id)
    console.print(f"token {record.id} ({record.name}) revoked")


@users_app.command("add")
def add_user(
    name: Annotated[str, typer.Argument(help="User name.")],
    role: Annotated[str, typer.Option(help="viewer, editor or owner.")],
    workspace: _Workspace = None,
) -> None:
    """Add a user to a workspace with a role (or change their role there)."""
    with client_from_env(workspace) as client:
        member = client.set_member(name, role)
    console.print(f"{member.user} is {member.role} in workspace {member.workspace}")


@users_app.command("remove")
def remove_user(name: Annotated[str, typer.Argument(help="User name.")], workspace: _Workspace = None) -> None:
    """Remove a user from a workspace (their tokens there stop working)."""
    with client_from_env(workspace) as client:
        client.remove_member(name)
    console.print(f"{name} removed")


@users_app.command("list")
def list_users(workspace: _Workspace = None) -> None:
    """The members of a workspace and their roles."""
    with client_from_env(workspace) as client:
        members = client.members()
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
