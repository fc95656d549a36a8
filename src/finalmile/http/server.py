"""`finalmile serve`: one ASGI app on uvicorn (uvloop, httptools), hosting every deployment in the store; and
`running_server`, the same app in a background thread of this process (the demo, notebooks)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import secrets
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from fastapi import FastAPI

import finalmile.tracing as tracing
from finalmile._version import __version__
from finalmile.access.roles import Principal, check_role, local_principal
from finalmile.dashboard import install as install_dashboard
from finalmile.errors import MissingDependencyError, NotReadyError
from finalmile.http.app import FinalmileApp, InferenceHandlers
from finalmile.http.auth import Authenticator, Guards
from finalmile.http.errors import add_error_handlers, document_errors
from finalmile.http.routes import (
    access,
    audit,
    connections,
    edge,
    explanations,
    jobs,
    logs,
    models,
    monitors,
    openai,
    pipelines,
    replays,
    rollouts,
    streams,
    v2,
)
from finalmile.jobs.scheduler import Periodic, Scheduler
from finalmile.services import Services
from finalmile.streaming.supervisor import Supervisor

SYNC_INTERVAL_S = 1.0
JOBS_INTERVAL_S = 1.0
ROLLOUT_INTERVAL_S = 1.0
log = logging.getLogger(__name__)


PUBLIC_DOCS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
"""FastAPI's own pages (the API's documentation): readable without a token, they change nothing."""


def create_app(
    services: Services | None = None,
    auth: bool | None = None,
    grants: Mapping[str, Principal] | None = None,
    background: bool = True,
) -> FinalmileApp:
    """The server app. With several worker processes each converges on the store's deployments every second.
    `auth` (default: the `auth` setting) checks a bearer token on every route but health and docs; `grants` are
    secrets valid besides the store's tokens (jobs' gateway); `background=False` runs no scheduler or streams."""
    owned = services is None
    root = (services or Services.from_settings()).for_workspace("default")  # the root, whichever workspace given
    enabled = root.settings.auth if auth is None else auth
    authenticator = Authenticator(root.access, enabled, local_principal(root.user), grants)
    if root.job_gateway is None:
        root.job_gateway = JobGateway(root)
    guards = Guards(authenticator, root)
    tracing.setup(root.settings.tracing)
    scheduler = Scheduler(
        [
            Periodic("deployments", SYNC_INTERVAL_S, lambda: _each(root, Services.sync)),
            # Several workers may all look; storing a window's result is guarded, so only one records it and acts.
            Periodic("monitors", root.settings.monitor_poll_s, lambda: _each(root, Services.run_monitors)),
            # Each due slot is claimed by inserting its run row, so with several servers each slot runs once.
            Periodic("jobs", JOBS_INTERVAL_S, lambda: _each(root, lambda services: services.jobs.run_due())),
            # A step's evaluation is leased and its event unique, so with several servers each is judged once.
            Periodic("rollouts", ROLLOUT_INTERVAL_S, lambda: _each(root, Services.run_rollouts)),
            *_edge_link(root),
        ]
    )

    supervisor = Supervisor(root.every_workspace)

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        await asyncio.get_running_loop().run_in_executor(None, _each, root, Services.sync)
        grpc_server = _start_grpc(root, authenticator)
        # What is alive now (imported libraries, loaded models: ~220,000 objects) lives as long as the server.
        # Frozen out of the cyclic GC, a full collection walks only what was made since: it took 120 ms of the
        # event loop's time (every 10-20 s under load with logging on, whose batches wait up to a second and so
        # reach the oldest generation), and now takes well under a millisecond.
        if background:
            gc.collect()
            gc.freeze()
            scheduler.start()
            supervisor.start()
        try:
            yield
        finally:
            if grpc_server is not None:
                await asyncio.get_running_loop().run_in_executor(None, grpc_server.stop)
            if background:
                await supervisor.stop()
                scheduler.stop()
                gc.unfreeze()  # so that exit collects them (native bindings report frozen objects as leaked)
            tracing.shutdown()
            if owned:
                root.close()

    handlers = InferenceHandlers()
    management = FastAPI(
        title="finalmile", version=__version__, docs_url="/docs", openapi_url="/openapi.json", lifespan=lifespan
    )
    add_error_handlers(management)
    document_errors(management)
    management.include_router(v2.router(handlers, guards))
    management.include_router(models.router(guards))
    management.include_router(pipelines.router(guards))
    management.include_router(logs.router(guards))
    management.include_router(monitors.router(guards))
    management.include_router(audit.router(guards))
    management.include_router(access.router(root, guards))
    management.include_router(connections.router(guards))
    management.include_router(streams.router(guards))
    management.include_router(jobs.router(guards))
    management.include_router(replays.router(guards))
    management.include_router(rollouts.router(guards))
    management.include_router(explanations.router(guards))
    management.include_router(openai.router(guards))
    management.include_router(edge.router(guards))
    install_dashboard(management, root, authenticator)
    return FinalmileApp(root, management, root.settings.max_body_bytes, authenticator)


def _edge_link(root: Services) -> list[Periodic]:
    """An edge site's link home (`edge/link.py`), when `finalmile serve --upstream` names its central server."""
    settings = root.settings
    if not settings.edge_upstream:
        return []
    from finalmile.edge.link import EdgeLink

    pipelines = [p for p in settings.edge_pipelines.split(",") if p]
    link = EdgeLink(
        root, settings.edge_upstream, settings.edge_token, settings.edge_site, pipelines,
        settings.edge_max_log_mb * 1024 * 1024,
    )  # fmt: skip
    return [Periodic("edge", settings.edge_sync_s, link.tick)]


def _start_grpc(root: Services, auth: Authenticator) -> Any:
    """The Open Inference Protocol's gRPC service on the `grpc_port` setting's port, when it names one."""
    if root.settings.grpc_port is None:
        return None
    try:
        from finalmile.http.grpc import GrpcServer
    except ImportError as exc:
        raise MissingDependencyError("grpcio", "grpc") from exc
    server = GrpcServer(root, auth, root.settings.grpc_host, root.settings.grpc_port)
    server.start(asyncio.get_running_loop())
    return server


def _each(root: Services, job: Any) -> None:
    """Run `job` on every workspace's services; one workspace failing never stops the others."""
    for services in root.every_workspace():
        try:
            job(services)
        except Exception:
            log.exception("%s failed in workspace %s", getattr(job, "__name__", job), services.workspace)


def serve(host: str = "127.0.0.1", port: int = 8080, workers: int = 1) -> None:
    import uvicorn

    uvicorn.run(
        "finalmile.http.server:create_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
    )


@contextlib.contextmanager
def running_server(
    services: Services, host: str = "127.0.0.1", port: int | None = None, auth: bool | None = None
) -> Iterator[str]:
    """Serve `services`' deployments in a background thread until the block ends; yields the base URL.
    `auth` as for `create_app`."""
    with _in_thread(create_app(services, auth), host, port) as url:
        yield url


@contextlib.contextmanager
def _in_thread(app: FinalmileApp, host: str = "127.0.0.1", port: int | None = None) -> Iterator[str]:
    import uvicorn

    if port is None:
        with socket.socket() as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, loop="asyncio", http="httptools"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="finalmile-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise NotReadyError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


class JobGateway:
    """How a job's sandboxed child reaches its workspace: the API on a loopback port of this process, started on
    the first run, and a secret per run, held in memory and valid while the run lasts, that acts as the uploader
    in the job's workspace. The child gets no store, no database URL and no key: only this."""

    def __init__(self, root: Services) -> None:
        self._root = root
        self._grants: dict[str, Principal] = {}
        self._lock = threading.Lock()
        self._server: contextlib.ExitStack | None = None
        self._url = ""

    @contextlib.contextmanager
    def __call__(self, user: str, workspace: str, role: str) -> Iterator[tuple[str, str]]:
        principal = Principal(user, workspace, check_role(role))
        secret = "fmj_" + secrets.token_urlsafe(32)
        with self._lock:
            if self._server is None:
                stack = contextlib.ExitStack()
                app = create_app(self._root, auth=True, grants=self._grants, background=False)
                self._url = stack.enter_context(_in_thread(app))
                self._server = stack
            self._grants[secret] = principal
        try:
            yield self._url, secret
        finally:
            with self._lock:
                self._grants.pop(secret, None)

    def close(self) -> None:
        with self._lock:
            if self._server is not None:
                self._server.close()
                self._server = None
