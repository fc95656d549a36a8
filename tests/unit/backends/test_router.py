"""The router refuses a Ray deployment on a server started without Ray, naming the field, before storing it."""

from __future__ import annotations

import pytest

from finalmile.backends.config import DeploymentConfig
from finalmile.backends.local import LocalBackend
from finalmile.backends.router import Backends
from finalmile.errors import BadRequestError

pytestmark = pytest.mark.unit


def test_a_ray_deployment_on_a_server_without_ray_is_a_400_naming_backend_and_nothing_is_recorded() -> None:
    made: list[object] = []

    def local(wanted):  # type: ignore[no-untyped-def]
        return LocalBackend(lambda name, version, config: None, wanted)  # type: ignore[arg-type,return-value]

    router = Backends(lambda: {}, "local", local, lambda wanted: made.append(wanted) or None, ray_allowed=False)  # type: ignore[arg-type,func-returns-value]
    recorded: list[bool] = []
    with pytest.raises(BadRequestError) as refused:
        router.deploy("p", 1, DeploymentConfig(backend="ray"), lambda: recorded.append(True))
    assert refused.value.detail == {"field": "backend"} and "--backend ray" in refused.value.message
    assert made == [] and recorded == []  # no Ray was started, no deployment stored
