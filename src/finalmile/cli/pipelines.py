"""CLI commands for pipelines, deployments and the server (registered on the main `finalmile` app)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from finalmile.cli.common import client_from_env, console, serving
from finalmile.errors import BadRequestError, PipelineNotFound

pipelines_app = typer.Typer(help="Define pipelines and manage their versions.", no_args_is_help=True)


@pipelines_app.command("apply")
def apply(
    path: Annotated[Path, typer.Argument(help="Pipeline definition (YAML).")],
    deploy: Annotated[bool, typer.Option("--deploy", help="Deploy the new version right away.")] = False,
) -> None:
    """Create a pipeline version from a YAML definition (no new version when nothing changed)."""
    with client_from_env() as client:
        pipeline = client.apply_pipeline(path, deploy=deploy)
        version = client.pipeline_versions(pipeline.name)[-1]
    console.print(f"{pipeline.name}: version {version.version}" + (" deployed" if deploy else ""))


@pipelines_app.command("list")
def list_pipelines() -> None:
    """List pipelines with their latest and deployed versions."""
    with client_from_env() as client:
        deployed = {d["name"]: d["version"] for d in client.deployments() if d["active"]}
        table = Table("pipeline", "latest", "deployed")
        for name in client.pipelines():
            table.add_row(name, str(client.pipeline_versions(name)[-1].version), str(deployed.get(name, "-")))
    console.print(table)


@pipelines_app.command("versions")
def versions(name: str) -> None:
    """A pipeline's versions, oldest first: who made each and when."""
    with client_from_env() as client:
        records = client.pipeline_versions(name)
    table = Table("version", "created (UTC)", "by", "steps")
    for r in records:
        table.add_row(str(r.version), f"{r.created_at:%Y-%m-%d %H:%M}", r.created_by, str(len(r.spec["steps"])))
    console.print(table)


@pipelines_app.command("show")
def show(name: str, version: Annotated[int | None, typer.Option(help="Default: the latest.")] = None) -> None:
    """Show a pipeline version's definition (exact model versions)."""
    import yaml

    with client_from_env() as client:
        found = [r for r in client.pipeline_versions(name) if version in (None, r.version)]
    if not found:
        raise PipelineNotFound(name, version)
    record = found[-1]
    console.print(
        f"[bold]{name}[/] version {record.version}, created {record.created_at:%Y-%m-%d %H:%M} by {record.created_by}"
    )
    console.print(yaml.safe_dump(record.spec, sort_keys=False), highlight=False)


def deploy(
    name: str,
    version: Annotated[int | None, typer.Option(help="Default: the latest version.")] = None,
    workers: Annotated[int, typer.Option(help="Inference threads.")] = 1,
    max_batch_size: Annotated[int, typer.Option(help="Most rows per batch.")] = 64,
    max_delay_ms: Annotated[float, typer.Option(help="Batch wait under concurrency; 0 turns batching off.")] = 1.0,
    backend: Annotated[
        str | None, typer.Option(help="local or ray (Ray Serve replicas); default: the server's backend.")
    ] = None,
    replicas: Annotated[int, typer.Option(help="Ray replicas (without autoscaling).")] = 1,
    min_replicas: Annotated[int | None, typer.Option(help="Ray autoscaling: fewest replicas.")] = None,
    max_replicas: Annotated[int | None, typer.Option(help="Ray autoscaling: most replicas.")] = None,
    replica_cpus: Annotated[float, typer.Option(help="Ray: CPUs reserved per replica.")] = 0.5,
) -> None:
    """Deploy a pipeline version (a running server picks it up within a second)."""
    from finalmile.backends.config import deployment_config

    autoscaling = None
    if min_replicas is not None or max_replicas is not None:
        autoscaling = {"min_replicas": min_replicas or 1, "max_replicas": max_replicas or max(4, min_replicas or 1)}
    config = deployment_config(
        workers=workers,
        max_batch_size=max_batch_size,
        max_delay_ms=max_delay_ms,
        backend=backend,
        replicas=replicas,
        autoscaling=autoscaling,
        replica_cpus=replica_cpus,
    )
    with client_from_env() as client:
        record = client.deploy_pipeline(name, version, config)
    console.print(f"deployed {name} version {record.version}" + (f" on {backend}" if backend else ""))


def undeploy(name: str) -> None:
    """Stop serving a pipeline."""
    with client_from_env() as client:
        client.undeploy_pipeline(name)
    console.print(f"undeployed {name}")


def rollback(name: str) -> None:
    """Deploy the version before the serving one."""
    with client_from_env() as client:
        console.print(client.rollback_pipeline(name))


def route(name: str, variant: Annotated[str, typer.Argument(help="The A/B variant to send all traffic to.")]) -> None:
    """Send all of the serving version's A/B traffic to one variant (deployed as a new version)."""
    with client_from_env() as client:
        console.print(client.route_pipeline(name, variant))


def deployments() -> None:
    """Every deployment: version, backend, and whether it is serving here (or on the server)."""
    with client_from_env() as client:
        found = client.deployments()
    table = Table("pipeline", "version", "active", "backend", "serving", "updated (UTC)")
    for d in found:
        backend = d["config"].get("backend") or "default"
        when = f"{d['updated_at']:%Y-%m-%d %H:%M}"
        table.add_row(d["name"], str(d["version"]), str(d["active"]), backend, str(d["serving"]), when)
    console.print(table)


def infer(
    name: str,
    input: Annotated[Path, typer.Option("--input", "-i", help="Rows: CSV, Parquet or JSON lines.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write results here.")] = None,
) -> None:
    """Run a deployed pipeline on a file's rows (in this process, or on the server with --url)."""
    from finalmile.arrow.files import file_format, read_table, write_table
    from finalmile.cli.common import print_table

    if output is not None:
        file_format(output)
    rows = read_table(input)
    with client_from_env() as client:
        result = serving(client).infer_pipeline(name, rows).table
    if output is None:
        print_table(result)
    else:
        write_table(result, output)
        console.print(f"wrote {result.num_rows} rows to {output}")


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8080,
    workers: Annotated[int, typer.Option(help="Server processes.", min=1, max=64)] = 1,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Laptop use: no tokens. Refused unless the host is a loopback address.")
    ] = False,
    backend: Annotated[
        str, typer.Option(help="Where deployments that name no backend run: local threads, or ray replicas.")
    ] = "local",
    ray_address: Annotated[
        str | None, typer.Option(help="The Ray cluster to join (HOST:PORT); default: start a local Ray.")
    ] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Also serve the Open Inference Protocol over gRPC on this port.", min=1, max=65535),
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="An edge bundle (finalmile bundle): install its pipeline here and serve it.")
    ] = None,
    upstream: Annotated[
        str | None, typer.Option(help="Edge: the central server its logs go to and new versions come from.")
    ] = None,
    upstream_token: Annotated[str | None, typer.Option(help="Edge: the token for the central server.")] = None,
    site: Annotated[str, typer.Option(help="Edge: this site's name in the central log's `site` column.")] = "edge",
) -> None:
    """Serve every deployed pipeline: Open Inference Protocol V2 (HTTP, and gRPC with --grpc-port), records/Arrow,
    management API, /metrics.

    Every route but health and docs needs a bearer token; the first serve of a store prints an owner token."""
    import os

    from finalmile.config import FinalmileSettings
    from finalmile.http.server import serve as run_server

    auth = not no_auth and FinalmileSettings().auth
    if not auth and not is_loopback(host):
        raise BadRequestError(
            f"--no-auth on {host}: auth is on whenever the server listens beyond loopback; "
            "serve on 127.0.0.1, or use tokens (finalmile admin init)",
            {"field": "no_auth"},
        )
    if backend not in ("local", "ray"):
        raise BadRequestError(f"--backend {backend}: must be local or ray", {"field": "backend"})
    shared = ""
    if backend == "ray" and not ray_address and workers > 1:
        ray_address, shared = _shared_ray_cluster(), "; one local Ray cluster for every worker"
    os.environ["FINALMILE_AUTH"] = "true" if auth else "false"  # the worker processes read these
    os.environ["FINALMILE_BACKEND"] = backend
    if grpc_port is not None:
        os.environ["FINALMILE_GRPC_PORT"] = str(grpc_port)
        os.environ["FINALMILE_GRPC_HOST"] = host
    if ray_address:
        os.environ["FINALMILE_RAY_ADDRESS"] = ray_address
    if backend != "ray" and not ray_address:
        os.environ["FINALMILE_RAY_ON_DEMAND"] = "false"  # a Ray deployment is refused, not a Ray started here
    if upstream is not None:
        if bundle is None:
            raise BadRequestError("--upstream: an edge serves a bundle: pass --bundle too", {"field": "upstream"})
        os.environ["FINALMILE_EDGE_UPSTREAM"] = upstream
        os.environ["FINALMILE_EDGE_SITE"] = site
        if upstream_token:
            os.environ["FINALMILE_EDGE_TOKEN"] = upstream_token
    if bundle is not None:
        from finalmile.edge.serve import install_bundle

        with client_from_env() as client:
            served = install_bundle(client.services, bundle)
        os.environ["FINALMILE_EDGE_PIPELINES"] = served
        console.print(
            f"edge bundle {bundle}: serving {served}" + (f", reporting to {upstream} as {site}" if upstream else "")
        )
    if auth:
        with client_from_env() as client:
            if not client.services.access.has_tokens():
                record, secret = client.services.init_access()
                console.print(f"No tokens yet: owner token {record.id} for {record.user} (shown once):")
                print(secret, flush=True)
    mode = "tokens required" if auth else "no auth (--no-auth, loopback only)"
    grpc = f"; gRPC on {host}:{grpc_port}" if grpc_port is not None else ""
    console.print(f"finalmile serving on http://{host}:{port} (docs at /docs; {mode}; backend {backend}{shared}{grpc})")
    run_server(host, port, workers)


def _shared_ray_cluster() -> str:
    """Server workers on Ray join one local cluster, started here in the process that supervises them: each would
    otherwise start its own, with replicas of its own. Returns its address."""
    from finalmile.errors import MissingDependencyError

    try:
        from finalmile.backends.ray import start_cluster
    except ImportError as exc:
        raise MissingDependencyError("ray", "ray") from exc
    return start_cluster()


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and `localhost`: only this machine can reach them."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
