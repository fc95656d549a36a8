"""Every verb of `finalmile.verbs.VERBS` is on both transports of `Client` with the same parameters, on the API at
its declared route with its declared permission, and on the CLI at its declared command with `--url`/`--token`;
nothing is on a client, the API or the CLI without being declared."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer.main
from fastapi.routing import APIRoute

from finalmile.cli.app import app as cli_app
from finalmile.cli.common import LOCAL_ONLY
from finalmile.client import Client, LocalClient, RemoteClient
from finalmile.http.app import FinalmileApp
from finalmile.http.server import create_app
from finalmile.verbs import VERBS
from tests.integration.test_auth import declared, flat

NOT_VERBS = {"close"}
"""Public methods of a client that are not operations: the client's own life."""


def _verbs_of(cls: type) -> set[str]:
    return {n for n, v in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")} - NOT_VERBS


def _implements(cls: type, verb: str) -> bool:
    """Defined by the transport itself, or written once on `Client` out of other verbs (no route of its own)."""
    owner = next(k for k in cls.__mro__ if verb in vars(k))
    return owner is not Client or VERBS[verb].http is None


def test_both_transports_have_every_declared_verb_and_nothing_else() -> None:
    assert _verbs_of(LocalClient) == set(VERBS), sorted(_verbs_of(LocalClient) ^ set(VERBS))
    assert _verbs_of(RemoteClient) == set(VERBS), sorted(_verbs_of(RemoteClient) ^ set(VERBS))
    for verb in VERBS:
        for cls in (LocalClient, RemoteClient):
            assert _implements(cls, verb), f"{cls.__name__}.{verb}: not implemented"


def test_both_transports_take_the_same_parameters_with_the_same_defaults() -> None:
    for verb in VERBS:
        local = inspect.signature(getattr(LocalClient, verb)).parameters
        remote = inspect.signature(getattr(RemoteClient, verb)).parameters
        assert list(local) == list(remote), f"{verb}: {list(local)} != {list(remote)}"
        for name, param in local.items():
            assert remote[name].default == param.default, f"{verb}({name}): defaults differ"
            assert remote[name].kind == param.kind, f"{verb}({name}): kinds differ"


def test_every_declared_route_exists_with_its_declared_permission(tmp_path: Path) -> None:
    with Client(home=tmp_path) as client:
        app = create_app(client.services, auth=True, background=False)
        routes: dict[str, str | None] = {}
        for route in flat(app.management.routes):
            if isinstance(route, APIRoute):
                for method in route.methods - {"HEAD"}:
                    routes[f"{method} {route.path}"] = declared(route)
        routes |= dict(FinalmileApp.RAW_ROUTES)
    for verb in VERBS.values():
        if verb.http is None:
            continue
        assert verb.http in routes, f"{verb.name}: no route {verb.http}"
        assert routes[verb.http] == verb.permission, f"{verb.http}: {routes[verb.http]}, declared {verb.permission}"
    carried = {v.http for v in VERBS.values()}
    for route in routes:
        if route.split(" ", 1)[1].startswith(("/api/v1/", "/pipelines/")):
            assert route in carried, f"{route}: a route of no declared verb"


def _commands(group: Any, prefix: str = "") -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        if hasattr(command, "commands"):
            found |= _commands(command, f"{path} ")
        else:
            found[path] = command
    return found


def test_every_declared_command_exists_and_every_command_speaks_to_a_server() -> None:
    commands = _commands(typer.main.get_command(cli_app))
    for verb in VERBS.values():
        if verb.cli is not None:
            assert verb.cli in commands, f"{verb.name}: no command `finalmile {verb.cli}`"
    for path, command in commands.items():
        options = {o for p in command.params for o in getattr(p, "opts", [])}
        if path in LOCAL_ONLY:
            continue
        assert {"--url", "--token"} <= options, f"`finalmile {path}` takes no --url/--token"
