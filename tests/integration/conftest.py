"""A real `finalmile serve` on loopback, over a store the test prepares."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).parents[2]


@dataclass
class Server:
    url: str
    port: int
    home: Path
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self, timeout: float = 20.0) -> bool:
        """Whether the server exited on its own within `timeout` seconds of SIGTERM; if not, its whole process
        group is killed: uvicorn's worker processes outlive a killed supervisor, and a live worker's journals are
        not for another process to compact."""
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
            return False


BROKER_PORTS = {"nats": 4222, "redis": 6379, "rabbitmq": 5672}
"""The machine's brokers on loopback (started by .ci/run when they are not running)."""
_BROKER_CLIENTS = {"nats": "nats", "redis": "redis", "rabbitmq": "aio_pika"}


def require_broker(name: str) -> None:
    """Skip unless the machine's broker `name` answers and its client library is installed; under
    FINALMILE_REQUIRE_BROKERS (set by .ci/run) a broker that does not answer fails the test instead."""
    pytest.importorskip(_BROKER_CLIENTS[name], reason="pip install 'finalmile[streams]'")
    with socket.socket() as s:
        s.settimeout(1)
        answers = s.connect_ex(("127.0.0.1", BROKER_PORTS[name])) == 0
    if not answers:
        reason = f"{name} is not running on 127.0.0.1:{BROKER_PORTS[name]} (the machine's services; see the env notes)"
        if os.environ.get("FINALMILE_REQUIRE_BROKERS"):
            pytest.fail(reason)
        pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    home: Path,
    env: dict[str, str] | None = None,
    timeout: float = 60.0,
    args: tuple[str, ...] = (),
    auth: bool = False,
    port: int | None = None,
) -> Server:
    """`auth=False` serves with `--no-auth` (loopback), for tests about something else; tests/integration/test_auth.py
    and the fuzz test serve with tokens."""
    port = port or free_port()
    if not auth:
        args = ("--no-auth", *args)
    log = home / f"server-{port}.log"
    environment = {k: v for k, v in os.environ.items() if not k.startswith("FINALMILE_")}
    environment |= {"FINALMILE_HOME": str(home), "PYTHONPATH": str(ROOT)} | (env or {})
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "finalmile", "serve", "--port", str(port), *args],
            env=environment,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,  # a group of its own, with its workers: see `Server.stop`
        )
    server = Server(f"http://127.0.0.1:{port}", port, home, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            if httpx.get(f"{server.url}/v2/health/live", timeout=1).status_code == 200:
                return server
        except httpx.TransportError:
            time.sleep(0.2)
    server.stop()
    raise RuntimeError(f"server did not start in {timeout}s: {log.read_text()}")


@pytest.fixture
def server_factory() -> Iterator[object]:
    started: list[Server] = []

    def start(
        home: Path, env: dict[str, str] | None = None, args: tuple[str, ...] = (), auth: bool = False,
        port: int | None = None,
    ) -> Server:  # fmt: skip
        server = start_server(home, env, args=args, auth=auth, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
