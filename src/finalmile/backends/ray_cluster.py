"""Joining a Ray cluster and starting a Serve application on it, with finalmile's errors instead of Ray's hangs
and tracebacks: a cluster that cannot be joined, replicas that cannot be placed. Imported by `backends/ray.py`,
after it has set Ray Serve's transport settings.
"""

from __future__ import annotations

import math
import os
import socket
import time
from typing import Any

import grpc
import ray
from ray import serve

from finalmile.backends.config import DeploymentConfig
from finalmile.errors import BackendUnavailable, BadRequestError, FinalmileError

QUIET = {"enable_access_log": False, "log_level": "WARNING"}  # a log line per call costs more than the call
LOCAL_NODE = "finalmile-local"
"""The label of a node a finalmile process started with `ray.init` (a local cluster, which no autoscaler grows)."""
GCS_WAIT = "RAY_gcs_server_port_wait_time_s"
GCS_WAIT_S = 120
"""How long a local start waits for its GCS server to be up (Ray's default, 30 s, ran out on a loaded 2-core
machine while other processes started); the variable, where set, is Ray's and is honoured as it is."""
START_POLL_S = 0.2
"""How often a start asks Serve whether the application runs (`serve.run` asks every second: a deploy
answers up to a second sooner)."""


def join(address: str | None) -> bool:
    """Join the cluster at `address`, else the one `RAY_ADDRESS` names, else start a local one of this process's
    own, labelled `LOCAL_NODE`; returns whether this process started Ray. Never one that `ray start` left running
    on the machine, which a bare `ray.init()` joins: Ray refuses the label there (every deploy was a 503), and a
    cluster finalmile did not start is not one it may shut down (give its address to use it).
    A cluster that cannot be joined is a 503 that names it and Ray's reason, not Ray's traceback."""
    if ray.is_initialized():
        return False
    target = address or os.environ.get("RAY_ADDRESS") or None
    _reachable(target)
    own = target is None
    waited = os.environ.get(GCS_WAIT)
    if own and waited is None:
        os.environ[GCS_WAIT] = str(GCS_WAIT_S)
    try:
        ray.init(
            address=target or "local",
            namespace="finalmile",
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=False,
            labels={LOCAL_NODE: "true"} if own else None,
        )
    except Exception as exc:
        _stop_started(exc)
        raise BackendUnavailable(_unjoinable(target, exc), {"field": "ray_address", "address": target}) from None
    finally:
        if own and waited is None:
            os.environ.pop(GCS_WAIT, None)
    return own


def _stop_started(exc: BaseException) -> None:
    """Stop what a failed local start left running. Ray's `Node` raises out of its constructor with its processes
    (the GCS server, the reaper) started and nothing holding it, so `ray.shutdown` cannot reach them: they ran on,
    and their handles warned when collected, in whatever code ran next. The node is in the traceback's frames."""
    from ray._private.node import Node

    tb = exc.__traceback__
    while tb is not None:
        node = tb.tb_frame.f_locals.get("self")
        if isinstance(node, Node):
            node.kill_all_processes(check_alive=False, allow_graceful=False, wait=True)
            break
        tb = tb.tb_next
    ray.shutdown()


def connect(address: str | None) -> bool:
    """`join` the cluster, and start Serve on it; returns whether this process started Ray itself."""
    started = join(address)
    serve.start(proxy_location="Disabled", logging_config=QUIET)
    return started


def start_cluster() -> str:
    """Start a local Ray cluster in this process, for server worker processes to join (each would otherwise start
    a cluster, and replicas, of its own); returns its address. It stops when this process exits."""
    connect(None)
    address: str = ray.get_runtime_context().gcs_address
    return address


def _reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a HOST:PORT where Ray's cluster cannot be, before Ray tries it: Ray retries an address where nothing
    listens for minutes, and one where something else listens (PostgreSQL, the dashboard's 8265) for ever. Its
    cluster speaks gRPC, so the port must answer gRPC's handshake."""
    if not address or "://" in address:  # ray://: Ray's client, its own errors
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():  # "auto": Ray's own lookup
        return
    detail = {"field": "ray_address", "address": address}
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise BackendUnavailable(
            f"cannot join the Ray cluster at {address}: nothing answers there ({exc.strerror or exc})", detail
        ) from None
    if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):  # a TLS handshake: Ray's own errors
        return
    with grpc.insecure_channel(address) as channel:
        try:
            grpc.channel_ready_future(channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            raise BackendUnavailable(
                f"cannot join the Ray cluster at {address}: what listens there is not Ray (no gRPC); give the port "
                "`ray start --head --port` was given (6379 by default), or ray://HOST:10001 for Ray's client",
                detail,
            ) from None


def _unjoinable(address: str | None, exc: BaseException) -> str:
    where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
    causes: list[BaseException] = [exc]
    while causes[-1].__cause__ is not None and len(causes) < 8:
        causes.append(causes[-1].__cause__)
    if any(isinstance(e, ray.exceptions.AuthenticationError) or "InvalidAuthToken" in str(e) for e in causes):
        return (
            f"cannot join {where}: it requires Ray's token authentication; set RAY_AUTH_MODE=token and give this "
            "machine the cluster's token (~/.ray/auth_token or RAY_AUTH_TOKEN), see the README's several machines"
        )
    return f"cannot join {where}: {first_line(causes[-1])}"


def run_within(bound: Any, name: str, timeout_s: float) -> Any:
    """Start application `name` and wait, in this thread, until its replicas answer; `TimeoutError` after
    `timeout_s`. `serve.run` waits for ever for replicas no node can place (more CPUs than any node has, or a full
    cluster), which held a deploy, and every later deploy and sync of the server, for good; its wait cannot be
    bounded from outside (a thread left in it outlived the application and, once Ray had shut down, started a
    cluster of its own), so Serve is asked to start it without waiting (`run_many`), and this loop waits."""
    target = serve.RunTarget(target=bound, name=name, route_prefix=None)
    [handle] = serve.run_many([target], wait_for_applications_running=False)
    deadline = time.monotonic() + timeout_s
    while True:
        state, message = app_status(name)
        if state == "RUNNING":
            return handle
        if state in ("DEPLOY_FAILED", "DELETED"):  # as serve.run: an application being deleted may be deployed again
            raise RuntimeError(f"Deploying application {name} failed: {message or state}")
        if time.monotonic() >= deadline:
            raise TimeoutError(name)
        time.sleep(START_POLL_S)


def app_status(name: str) -> tuple[str, str]:
    """Serve's status of application `name` (RUNNING, DEPLOYING, DEPLOY_FAILED, ...; DELETED when it has none) and
    its message."""
    app = serve.status().applications.get(name)
    return (str(app.status).rpartition(".")[2], app.message) if app is not None else ("DELETED", "")


def never_fits(what: str, config: DeploymentConfig, node_cpus: list[float]) -> BadRequestError | None:
    """Why the replicas `config` starts with can never all be placed on nodes of these CPUs, whatever else runs
    there: a replica larger than the largest node (400 naming `replica_cpus`), or more replicas than the nodes
    hold (400 naming `replicas`, or `autoscaling.min_replicas`); None if they fit an empty cluster."""
    cpus, largest = config.replica_cpus, max(node_cpus, default=0.0)
    if cpus > largest:
        return BadRequestError(
            f"deployment replica_cpus: each replica of {what} asks for {cpus:g} CPUs and the largest node of the "
            f"Ray cluster has {largest:g}",
            {"field": "replica_cpus", "largest_node_cpus": largest},
        )
    scaling = config.autoscaling
    starting = max(1, scaling.min_replicas) if scaling is not None else config.replicas
    room = sum(math.floor(n / cpus + 1e-6) for n in node_cpus)  # Ray counts resources in units of 1e-4
    if starting > room:
        field = "autoscaling.min_replicas" if scaling is not None else "replicas"
        return BadRequestError(
            f"deployment {field}: {what} starts {starting} replicas of {cpus:g} CPUs and the Ray cluster's "
            f"nodes ({', '.join(f'{n:g}' for n in node_cpus)} CPUs) hold {room}",
            {"field": field, "replicas_that_fit": room},
        )
    return None


def node_cpus() -> list[float]:
    """The CPUs of each live node of the cluster."""
    return _cpus(_alive_nodes())


def fixed_node_cpus() -> list[float] | None:
    """The CPUs of each live node if every one is a node a finalmile process started (`LOCAL_NODE`), else None.
    Such a cluster has no autoscaler, so replicas that do not fit now never will; server workers see it of the
    cluster their supervisor started."""
    nodes = _alive_nodes()
    return _cpus(nodes) if all(LOCAL_NODE in n.get("Labels", {}) for n in nodes) else None


def _alive_nodes() -> list[dict[str, Any]]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _cpus(nodes: list[dict[str, Any]]) -> list[float]:
    return [float(n["Resources"].get("CPU", 0.0)) for n in nodes]


def not_placed(what: str, name: str, config: DeploymentConfig, timeout_s: float) -> FinalmileError:
    """Why an application did not start in time, in Ray's words; deletes it. Replicas that cannot fit even an
    empty cluster are the deployment's own fault (a 400, `never_fits`); otherwise the cluster was busy or slow (a
    503 that says how many CPUs are free)."""
    reasons = _messages(name)
    serve.delete(name, _blocking=False)
    refused = never_fits(what, config, node_cpus())
    if refused is not None:
        refused.reword(f"{refused.message}: none could be placed in {timeout_s:g} s")
        return refused
    free, total = ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
    why = reasons[0].splitlines()[0][:400] if reasons else "still starting or waiting for room"
    why += f"; each replica asks for {config.replica_cpus:g} CPUs, {free:g} of the cluster's {total:g} are free"
    return BackendUnavailable(
        f"{what}: its Ray replicas did not start within {timeout_s:g} s (FINALMILE_RAY_START_TIMEOUT_S): {why}",
        {"timeout_s": timeout_s},
    )


def start_failed(what: str, name: str, exc: BaseException) -> BackendUnavailable:
    """A 503 that says why an application failed to start: its replicas' own error (a model that would not load,
    an artifact whose bytes changed), which Serve keeps in the deployment's status, not in the error it raises.
    Deletes the application."""
    reasons = _messages(name)
    serve.delete(name, _blocking=False)
    return BackendUnavailable(f"{what}: its Ray replicas did not start: {first_line(reasons[0] if reasons else exc)}")


def _messages(name: str) -> list[str]:
    app = serve.status().applications.get(name)
    return [d.message for d in app.deployments.values() if d.message] if app is not None else []


def first_line(exc: BaseException | str) -> str:
    """The line of Ray's message that says what went wrong (its messages end with a traceback)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    for line in reversed(lines):  # Ray's message ends with the replica's own error
        if "Error" in line or "error" in line:
            return line.strip()[:400]
    return (lines[-1] if lines else type(exc).__name__)[:400]
