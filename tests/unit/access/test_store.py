"""Workspaces, members and tokens in the metadata store (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from finalmile import Client
from finalmile.access.store import hash_token
from finalmile.errors import ConflictError, Forbidden, InvalidInputError, NotFoundError, Unauthorized
from finalmile.registry.tables import TokenRow


def test_a_token_is_shown_once_and_stored_only_as_its_hash(client: Client) -> None:
    record, secret = client.services.init_access("alice")
    assert secret.startswith("fm_") and len(secret) >= 3 + 43  # 256 random bits, URL-safe base64
    with client.services.metadata.sessions() as s:
        row = s.scalar(select(TokenRow))
    assert row is not None and row.secret_sha256 == hash_token(secret) and secret not in repr(vars(row))
    who = client.services.access.authenticate(secret)
    assert (who.user, who.workspace, who.role, who.token_id) == ("alice", "default", "owner", record.id)
    assert client.services.access.token(record.id).last_used_at is not None
    with pytest.raises(ConflictError):  # the bootstrap cannot be replayed to take a store over
        client.services.init_access("mallory")


def test_unknown_expired_and_revoked_tokens_are_refused(client: Client) -> None:
    services = client.services
    services.init_access("alice")
    with pytest.raises(Unauthorized, match="unknown"):
        services.access.authenticate("fm_" + "x" * 43)
    with pytest.raises(Unauthorized):
        services.access.authenticate("Basic abc")
    short, secret = services.create_token("alice", "default", "viewer", "short", timedelta(microseconds=1))
    with pytest.raises(Unauthorized, match="expired"):
        services.access.authenticate(secret)
    live, secret = services.create_token("alice", "default", "editor", "ci")
    assert services.access.authenticate(secret).role == "editor"
    services.revoke_token(live.id)
    with pytest.raises(Unauthorized, match="revoked"):
        services.access.authenticate(secret)
    with pytest.raises(InvalidInputError, match="expires"):
        services.create_token("alice", "default", "viewer", "", timedelta(seconds=-1))
    actions = [(e.action, e.target) for e in services.audit.entries()]
    assert ("create token", f"token {live.id}") in actions and ("revoke token", f"token {live.id}") in actions
    assert all(secret not in (e.after or "") for e in services.audit.entries())


def test_a_token_never_acts_above_its_users_current_role(client: Client) -> None:
    services = client.services
    services.init_access("alice")
    services.set_member("bob", "default", "editor")
    with pytest.raises(Forbidden, match="cannot hold a owner token"):
        services.create_token("bob", "default", "owner")
    _, secret = services.create_token("bob", "default", "editor")
    services.set_member("bob", "default", "viewer")  # demoted: the editor token now reads only
    assert services.access.authenticate(secret).role == "viewer"
    services.remove_member("bob", "default")
    with pytest.raises(Unauthorized, match="no longer a member"):
        services.access.authenticate(secret)


def test_workspaces_and_names_are_checked(client: Client) -> None:
    services = client.services
    assert services.access.workspaces() == ["default"]  # made by the migration
    services.create_workspace("risk")
    with pytest.raises(ConflictError):
        services.create_workspace("risk")
    for bad in ("", "a b", "x\x00", "../etc", "é"):
        with pytest.raises(InvalidInputError, match="workspace"):
            services.create_workspace(bad)
    with pytest.raises(InvalidInputError, match="role"):
        services.set_member("carol", "risk", "admin")
    with pytest.raises(NotFoundError, match="workspace"):
        services.set_member("carol", "nowhere", "viewer")
    services.set_member("carol", "risk", "viewer")
    assert [(m.user, m.role) for m in services.access.members("risk")] == [("carol", "viewer")]
    with pytest.raises(Forbidden, match="not a member"):  # a member of risk only holds tokens for risk
        services.create_token("carol", "default", "viewer")
    with pytest.raises(NotFoundError):
        services.revoke_token(2**40)


def test_a_token_made_by_any_path_is_in_the_audit_trail(client: Client) -> None:
    """A job once called `services.access.create_token(...)` directly: its owner token worked and no trail had it."""
    services = client.services
    services.create_workspace("b")
    services.set_member("mallory", "default", "owner")
    services.set_member("bob", "b", "editor")
    direct, _ = services.access.create_token("mallory", "default", "owner", "sneaky", actor="a job")
    through, _ = services.create_token("bob", "b", "editor", "ci", actor="admin")
    root = [(e.actor, e.action, e.target) for e in services.audit.entries()]
    assert ("a job", "create token", f"token {direct.id}") in root
    assert ("admin", "create token", f"token {through.id}") in root  # the store records it in the root's trail
    in_b = [(e.actor, e.action, e.target) for e in services.for_workspace("b").audit.entries() if "token" in e.action]
    assert in_b == [("admin", "create token", f"token {through.id}")]  # and the workspace's own trail shows it
    with pytest.raises(TypeError):
        services.access.create_token("mallory", "default", "owner")  # type: ignore[call-arg]  # no actor: no token
