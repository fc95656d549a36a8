"""The Ray backend: every deployed pipeline version is a Ray Serve application of `PipelineReplica`s.

finalmile's own HTTP front stays in front (Ray Serve's proxy is disabled): requests are coalesced by the front's
adaptive batcher, and each batch goes to a replica through a deployment handle, awaited on the front's loop, so
Ray's per-call cost is paid per batch, not per request (`ray_app.py`, one `App` per running application). A replica
(`ray_replica.py`) is a local backend in a Ray worker: it loads the version from the shared artifact store (every
artifact's hash verified on read), runs each batch as one, and writes its own journal and Parquet parts under the
shared home, so the one inference log holds every replica's rows.

Deploying a version starts its application beside the one serving, waits until its replicas answer, records it,
then swaps the front's handle; the old application is deleted after a grace period, its replicas finishing what
they hold. Applications are named `fm.STORE.WORKSPACE.PIPELINE.vVERSION.CONFIGHASH` (STORE: the start of the
metadata store's random id), so servers sharing a cluster and a store converge on the same ones instead of starting
their own, and servers of another store (staging beside production) never adopt or delete them. Several worker
processes of one `finalmile serve` join one cluster: the given one, or a local one that the supervising process
starts for them (`start_cluster`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

SERVE_ENV = {
    "RAY_SERVE_USE_GRPC_BY_DEFAULT": "1",
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REPLICA_GRPC_MAX_MESSAGE_LENGTH": str(2**31 - 1),
}
"""Ray Serve reads these once, when `ray.serve` is imported (in the front and in each replica): handle calls go
over gRPC straight to the replica instead of through Ray's actor-call path, a replica runs our code on its own event
loop instead of handing every call to a second thread, and a call or an answer may be as large as Serve's own gRPC
limit (2 GiB) instead of gRPC's default 4 MB, which refused a 100,000-row request that the local backend serves.
A handle round trip went from 2.6-2.9 to 1.4-1.7 ms p50 here, gRPC being most of it (bench/ray_hop.py,
bench/README.md). Set here before the import below, and given to every replica in its runtime environment, so a
cluster started with `ray start` needs none of them."""
for _name, _value in SERVE_ENV.items():
    os.environ.setdefault(_name, _value)

import ray  # noqa: E402
from ray import serve  # noqa: E402

from finalmile.arrow.frames import require_rows  # noqa: E402
from finalmile.backends.base import Wanted  # noqa: E402
from finalmile.backends.config import DeploymentConfig  # noqa: E402
from finalmile.backends.ray_app import App, ReplicaObserver  # noqa: E402
from finalmile.backends.ray_cluster import (  # noqa: E402
    QUIET,
    app_status,
    connect,
    first_line,
    fixed_node_cpus,
    never_fits,
    not_placed,
    run_within,
    start_failed,
)
from finalmile.backends.ray_cluster import join as join  # noqa: E402  (file inference's, after SERVE_ENV)
from finalmile.backends.ray_cluster import start_cluster as start_cluster  # noqa: E402  (the CLI's, after SERVE_ENV)
from finalmile.backends.ray_replica import Failure, HostFactory, PipelineReplica  # noqa: E402
from finalmile.errors import FinalmileError, PipelineNotDeployed  # noqa: E402
from finalmile.pipelines.loaded import RequestResult  # noqa: E402

log = logging.getLogger(__name__)
RETIRE_GRACE_S = 30.0
"""How long a replaced application may take to answer what it was sent before it is stopped regardless."""
RETIRE_SETTLE_S = 3.0
"""How long a replaced application keeps taking requests after the swap: those that looked it up just before, and
those of the other fronts on the same store (server workers, other servers), which adopt the new version at their
next sync (every second)."""
RETRY_FAILED_S = 60.0
"""How long a server's sync waits before starting again a stored deployment whose replicas would not start: each
try may take the whole start timeout, and holds this server's deploys meanwhile."""
STALE_AFTER_S = 120.0
STALE_CHECK_S = 15.0
MAX_ONGOING = 64
"""Calls one replica takes at once. A front sends each request of a batch's size or more as its own call, so 16
clients of 1,000 rows are 16 calls; past this limit Serve's router backs off and asks the replicas for their queue
lengths (actor calls) before every retry, which cost more than the queueing they avoid (1,000-row requests went
from 54% to 84% of the local backend's rows/s when it was raised from 8). The replica queues them on its threads."""


def app_scope(store: str, workspace: str) -> str:
    """How the names of a store's and workspace's applications start: what another store's servers never touch."""
    return f"fm.{store[:12]}.{workspace}"


def app_name(scope: str, pipeline: str, version: int, config: DeploymentConfig) -> str:
    """The application of this version and config in `scope` (`app_scope`)."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:8]
    return f"{scope}.{pipeline}.v{version}.{digest}"


class RayBackend:
    """The `Backend` whose pipelines run as Ray Serve replicas, reached through deployment handles."""

    name = "ray"

    def __init__(
        self,
        wanted: Wanted,
        host: HostFactory,
        workspace: str,
        store: str,
        address: str | None = None,
        observe: ReplicaObserver | None = None,
        start_timeout_s: float = 300.0,
    ) -> None:
        self._wanted = wanted
        self.start_timeout_s = start_timeout_s
        self._host = host
        self.workspace = workspace
        self.scope = app_scope(store, workspace)
        self._observe: ReplicaObserver = observe or (lambda *_: None)
        self._started_ray = connect(address)
        self.apps: dict[str, App] = {}
        self._lock = threading.Lock()
        self._converging = threading.RLock()
        """Held by deploy and sync: one change to the applications at a time in this process."""
        self._stale: dict[str, float] = {}
        self._stale_checked = -STALE_CHECK_S
        self._failed: dict[str, float] = {}
        """Applications the store wants that would not start -> when a sync may try again."""

    # -- deploying ----------------------------------------------------------------------------------------------

    def _start(self, pipeline: str, version: int, config: DeploymentConfig) -> App:
        """Run (or adopt) the application of this version and config; raises if its replicas cannot load it."""
        name = app_name(self.scope, pipeline, version, config)
        if app_status(name)[0] == "RUNNING":
            return App(name, serve.get_app_handle(name), pipeline, config, self._observe)
        what = f"pipeline '{pipeline}' version {version}"
        fixed = fixed_node_cpus()
        refused = never_fits(what, config, fixed) if fixed is not None else None
        if refused is not None:  # no autoscaler will add a node: say so now, not after the start timeout
            raise refused
        options: dict[str, Any] = {
            "name": "replica",
            "ray_actor_options": {
                "num_cpus": config.replica_cpus,
                "runtime_env": {"env_vars": {name: os.environ[name] for name in SERVE_ENV}},
            },
            "max_ongoing_requests": MAX_ONGOING,
            "max_constructor_retry_count": 1,
            "logging_config": QUIET,
            "graceful_shutdown_timeout_s": 10.0,
        }
        if config.autoscaling is not None:
            scaling = config.autoscaling
            options["autoscaling_config"] = scaling.model_dump() | {"initial_replicas": max(1, scaling.min_replicas)}
        else:
            options["num_replicas"] = config.replicas
        deployment = serve.deployment(**options)(PipelineReplica)
        bound = deployment.bind(self._host, pipeline, version, config.model_dump(mode="json"))
        try:
            handle = run_within(bound, name, self.start_timeout_s)
        except TimeoutError:
            raise not_placed(what, name, config, self.start_timeout_s) from None
        except Exception as exc:
            raise start_failed(what, name, exc) from None
        return App(name, handle, pipeline, config, self._observe)

    def deploy(
        self, pipeline: str, version: int, config: DeploymentConfig, record: Callable[[], object] | None = None
    ) -> None:
        with self._converging:  # a sync meanwhile would see the new application as unwanted (not yet recorded)
            app = self._start(pipeline, version, config)  # beside the serving one; one that fails is not recorded
            if record is not None:
                record()
            self._swap(pipeline, app)

    def _swap(self, pipeline: str, app: App) -> None:
        with self._lock:
            old = self.apps.get(pipeline)
            self.apps[pipeline] = app
        if old is not None and old.app != app.app:
            self._retire(old)

    def _retire(self, old: App, grace_s: float = RETIRE_GRACE_S) -> None:
        """Requests already sent to `old` finish (for up to `grace_s`); then the front's threads stop and, unless
        it serves again, its replicas are released."""

        def stop() -> None:
            time.sleep(RETIRE_SETTLE_S)  # requests that looked `old` up, here or in another front, reach it
            deadline = time.monotonic() + grace_s
            while old.busy and time.monotonic() < deadline:
                time.sleep(0.1)
            old.close()
            with self._lock:
                serving = old.app in self._held()
            if not serving and ray.is_initialized():  # Serve would start a Ray of its own, which dies with this thread
                try:
                    serve.delete(old.app, _blocking=False)
                except Exception as exc:  # Ray went first (the server is closing): its applications go with it
                    log.warning("could not delete Ray application %s: %s", old.app, first_line(exc))

        threading.Thread(target=stop, name=f"retire-{old.app}", daemon=True).start()

    def undeploy(self, pipeline: str) -> None:
        with self._lock:
            app = self.apps.pop(pipeline, None)
        if app is not None:
            self._retire(app)

    def sync(self) -> None:
        """Converge on the store: adopt or start each wanted version's application, stop what is not wanted, and
        delete this store's and workspace's applications that nothing wants (left by a server that stopped)."""
        with self._converging:
            wanted = self._wanted()
            for name, (version, config) in wanted.items():
                wanted_app = app_name(self.scope, name, version, config)
                current = self.apps.get(name)
                if current is not None and current.app == wanted_app:
                    continue
                if time.monotonic() < self._failed.get(wanted_app, 0.0):  # failed to start lately: not yet again
                    continue
                try:
                    self._swap(name, self._start(name, version, config))
                except FinalmileError as exc:
                    log.error("cannot deploy %s:%s on Ray: %s", name, version, exc.message)
                    self._failed[wanted_app] = time.monotonic() + RETRY_FAILED_S
            for name in [n for n in self.apps if n not in wanted]:
                self.undeploy(name)
            self._delete_stale({app_name(self.scope, n, v, c) for n, (v, c) in wanted.items()} | self._held())

    def _delete_stale(self, keep: set[str]) -> None:
        """Delete this scope's applications that nothing has wanted for `STALE_AFTER_S`: long enough that
        another server's deploy, whose application runs before its store records it, is never taken for one.
        Looks every `STALE_CHECK_S` only: Serve's status is a controller call whose answer is rebuilt as pydantic
        models (one cloudpickles a function), 3% of a busy front's CPU when asked every second."""
        now = time.monotonic()
        if now - self._stale_checked < STALE_CHECK_S:
            return
        self._stale_checked = now
        running = {n for n in serve.status().applications if n.startswith(f"{self.scope}.")}
        self._stale = {n: self._stale.get(n, now) for n in running - keep}
        for name, since in list(self._stale.items()):
            if now - since >= STALE_AFTER_S:
                serve.delete(name, _blocking=False)
                del self._stale[name]

    def _held(self) -> set[str]:
        return {app.app for app in self.apps.values()}

    # -- serving ------------------------------------------------------------------------------------------------

    def get(self, pipeline: str, version: int | None = None) -> App:
        app = self.apps.get(pipeline)
        if app is None:
            raise PipelineNotDeployed(pipeline)
        if version is not None and app.version != version:
            raise PipelineNotDeployed(pipeline, version)
        return app

    def deployed(self) -> dict[str, int]:
        return {name: app.version for name, app in list(self.apps.items())}

    def serves(self, pipeline: str) -> bool:
        return pipeline in self.apps

    def target(self, pipeline: str, version: int | None = None) -> App:
        return self.get(pipeline, version)

    async def infer_each(
        self, pipeline: str, table: pa.Table, ids: list[str], log: bool = True, durable: bool = False
    ) -> list[RequestResult]:
        app = self.get(pipeline)
        requests = np.arange(require_rows(table).num_rows, dtype=np.int32)
        names: list[str | None] = list(ids)
        results = await app.call(table, requests, names, log, durable)
        for part in results:
            if isinstance(part, Failure):
                raise part.error()
        return [r for r in results if isinstance(r, RequestResult)]

    def replicas(self, pipeline: str) -> list[tuple[str, int]]:
        """The replicas serving `pipeline` now: (replica id, worker pid), asked of each by Ray's routing (tests)."""
        app = self.get(pipeline)
        seen: dict[str, int] = {}
        for _ in range(20 * max(1, app.calls)):
            _, _, replica, pid = app.handle.describe.remote().result()
            seen[replica] = pid
        return sorted(seen.items())

    def close(self) -> None:
        """Release the front's threads. The applications stay: they belong to the cluster, and the store still
        records the deployments (the next server adopts them); a Ray this process started goes with it."""
        with self._lock:
            apps, self.apps = list(self.apps.values()), {}
        for app in apps:
            app.close()
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()
