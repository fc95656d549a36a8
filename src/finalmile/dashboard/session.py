"""The dashboard's login session: a cookie that carries the caller's API token, encrypted and signed.

The cookie is a Fernet token (AES with an HMAC and a timestamp, from `cryptography`) of the bearer token and a
CSRF secret, under a key derived from `FINALMILE_SECRET_KEY` or, where that is unset, a key file made once in the
home (every worker of a server shares it). It is `HttpOnly` (no script reads it), `SameSite=Strict` (no other site's
page sends it) and expires after `MAX_AGE_S`; every request still checks the token against the access store, so a
revoked token or a changed role takes effect in the dashboard as it does in the API.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "finalmile_session"
MAX_AGE_S = 8 * 3600
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    """What a session cookie holds: the API token it acts with, and the secret its forms must echo."""

    token: str
    csrf: str

    def csrf_matches(self, sent: str | None) -> bool:
        return bool(sent) and hmac.compare_digest(sent.encode(), self.csrf.encode())  # type: ignore[union-attr]


class Sessions:
    """Seals and opens session cookies."""

    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)

    def issue(self, token: str) -> tuple[str, Session]:
        session = Session(token, secrets.token_urlsafe(24))
        sealed = self._fernet.encrypt(json.dumps({"token": token, "csrf": session.csrf}).encode())
        return sealed.decode(), session

    def open(self, cookie: str | None) -> Session | None:
        """The session in a cookie, or None for a missing, forged, tampered or expired one."""
        if not cookie:
            return None
        try:
            fields = json.loads(self._fernet.decrypt(cookie.encode(), ttl=MAX_AGE_S))
            return Session(str(fields["token"]), str(fields["csrf"]))
        except (InvalidToken, ValueError, KeyError, TypeError):
            return None


def session_key(secret_key: str | None, home: Path) -> bytes:
    """A Fernet key for sessions: derived from the server's secret key (never the same bytes as the connections'
    key), else read from — or made once in — `home/dashboard.key`, readable by its owner only."""
    if secret_key:
        digest = hmac.new(secret_key.encode(), b"finalmile dashboard sessions", hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest)
    path = home / "dashboard.key"
    if not path.exists():  # written aside, then linked into place: no worker ever reads half a key
        spare = home / f".dashboard.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(spare, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
        try:
            os.link(spare, path)
        except FileExistsError:
            pass  # another worker made it first: theirs is the key
        finally:
            spare.unlink()
    return path.read_bytes().strip()
