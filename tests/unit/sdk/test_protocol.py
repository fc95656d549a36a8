"""The embedded and the remote client speak the same verbs with the same parameters (`sdk.protocol`)."""

from __future__ import annotations

import inspect

from finalmile.client import Client
from finalmile.sdk.protocol import ClientProtocol
from finalmile.sdk.remote import RemoteClient


def test_both_clients_implement_every_verb_of_the_protocol_with_its_parameters() -> None:
    verbs = [n for n, v in vars(ClientProtocol).items() if callable(v) and not n.startswith("_")]
    assert len(verbs) >= 15
    for name in verbs:
        wanted = inspect.signature(getattr(ClientProtocol, name)).parameters
        for cls in (Client, RemoteClient):
            have = inspect.signature(getattr(cls, name)).parameters
            assert list(have)[: len(wanted)] == list(wanted), f"{cls.__name__}.{name}: {list(have)}"
            for param in list(have)[len(wanted) :]:  # extras only with defaults, so protocol calls still work
                assert have[param].default is not inspect.Parameter.empty, f"{cls.__name__}.{name}({param})"
            for param, spec in wanted.items():
                assert have[param].default == spec.default, f"{cls.__name__}.{name}({param}) default"
