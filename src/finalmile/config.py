"""Settings, read from `FINALMILE_*` environment variables when a Client or server is created (never at import)."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from finalmile.errors import FinalmileError, InvalidInputError


class FinalmileSettings(BaseSettings):
    """Every `FINALMILE_*` setting, read once when a client or server starts."""

    model_config = SettingsConfigDict(env_prefix="FINALMILE_", extra="ignore")

    home: Path = Field(default=Path(".finalmile"))
    """Where the embedded metadata database, artifacts and logs live; created on first use."""

    database_url: str | None = None
    """SQLAlchemy URL of the metadata store; SQLite under `home` when unset (e.g. postgresql+psycopg://…)."""

    user: str | None = None
    """Recorded as the creator of what this process registers; the OS user when unset."""

    ort_intra_op_threads: int = 1
    """ONNX Runtime threads inside one operator. One suits small models on small machines: serving parallelism comes
    from concurrent requests, and more threads per call only add synchronisation."""

    ort_inter_op_threads: int = 1
    """ONNX Runtime threads across independent operators."""

    ort_device: str = "auto"
    """`auto` uses the CUDA execution provider when present and falls back to CPU; `cpu` forces the CPU."""

    max_body_bytes: int = 64 * 1024 * 1024
    """Largest request body the server reads; a larger one is answered 413 before it is read."""

    parity_rtol: float = 1e-4
    """Relative tolerance between native and ONNX probabilities or predictions for a conversion to be accepted."""

    parity_atol: float = 1e-4
    """Absolute tolerance, added to the relative one (numpy.isclose semantics)."""

    parity_rows: int = 256
    """Rows drawn from the schema for the parity check when no sample is given."""

    upload_timeout_s: float = 300.0
    """Longest an upload over HTTP may take to load and check the model in its child process."""

    query_timeout_s: float = 30.0
    """Longest a query of the SQL surface may run before it is stopped."""

    query_max_rows: int = Field(default=100_000, gt=0)
    """Most rows a query of the SQL surface returns; a larger result is refused with a message, not cut."""
    query_max_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    """Most bytes (as Arrow) a query of the SQL surface returns; a larger result is refused, not cut."""
    query_memory_mb: int = Field(default=1024, gt=0)
    """DuckDB's memory limit for one query of the SQL surface (nothing spills to disk)."""

    workspace: str = "default"
    """The workspace the embedded `Client` and the local CLI work in."""
    secret_key: str | None = Field(default=None, repr=False)
    """A Fernet key that stored connections' URLs are encrypted under (never stored; keep it out of the store)."""
    sandbox: Literal["auto", "bwrap", "off"] = "auto"
    """How uploaded code (jobs, Python models, pickles) runs: `auto` in bubblewrap when installed (else a plain
    child process with a clean environment, and a warning), `bwrap` refuses to run it without, `off` never."""
    auth: bool = True
    """Check an API token on every route but health and the API's docs. `finalmile serve --no-auth` turns it off,
    and only on a loopback address (a laptop)."""
    grpc_port: int | None = Field(default=None, ge=1, le=65535)
    """Also serve the Open Inference Protocol over gRPC on this port (`finalmile serve --grpc-port`)."""
    tracing: bool = False
    """OpenTelemetry traces of every request (`finalmile.tracing`; export by the standard `OTEL_*` variables)."""
    log_compact_s: float = Field(default=10.0, gt=0, le=3_600)
    """How often the log's journal becomes sealed Parquet parts (what an edge pushes home, `edge/link.py`)."""
    edge_upstream: str | None = None
    """An edge site's central server (`finalmile serve --upstream`): its log parts go there, new versions come from
    there (`edge/link.py`)."""
    edge_token: str | None = Field(default=None, repr=False)
    """The token the edge uses with its central server (`serve --upstream-token`, or `serve.sh --token`)."""
    edge_site: str = "edge"
    """This site's name, in the `site` column of its rows centrally."""
    edge_pipelines: str = ""
    """The bundled pipelines (comma-separated) whose deployed version the edge follows."""
    edge_sync_s: float = Field(default=5.0, gt=0, le=86_400)
    """How often the edge pushes its log parts and asks for a new version."""
    edge_max_log_mb: int = Field(default=1024, gt=0)
    """The local log's bound on an edge: past it, parts already pushed are deleted first, then the oldest unpushed."""
    grpc_host: str = "127.0.0.1"
    """The interface the gRPC service listens on (`finalmile serve` sets it to the HTTP server's host)."""
    dashboard_secure_cookie: bool = False
    """Mark the dashboard's session cookie `Secure` (sent over HTTPS only): set it behind a TLS proxy."""
    backend: Literal["local", "ray"] = "local"
    """Where a deployment that names no backend runs (`finalmile serve --backend ray`)."""
    ray_address: str | None = None
    """The Ray cluster to join (`ray start --head` prints it); unset: `RAY_ADDRESS`'s, else a local Ray of
    finalmile's own, started on first use (never one that `ray start` left running on the machine)."""
    ray_start_timeout_s: float = Field(default=300.0, gt=0)
    """Longest a deployment's Ray replicas may take to be placed, load and warm; past it the deploy is undone and
    refused with Ray's reason (a cluster that autoscales needs a few minutes to add a node)."""
    ray_on_demand: bool = True
    """Whether a deployment that asks for Ray may start a local Ray here. `finalmile serve` turns it off unless
    started with `--backend ray` or `--ray-address`: a server joins Ray only when told to."""
    monitor_poll_s: float = 5.0
    """How often the server looks for monitor windows that have ended (each monitor has its own interval)."""
    job_lost_after_s: float = Field(default=30.0, gt=0)
    """A job run whose scheduler has not beaten for this long is `lost` (its server died): it is not run again,
    and the job's next slot may start."""

    def resolved_database_url(self) -> str:
        """The metadata store's URL: the configured one, or SQLite under the home."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'finalmile.db').resolve()}"


MAX_DURATION_S = 3650 * 86_400.0
"""The longest duration a request may carry (ten years): a token's lifetime or an assay's window beyond that is a
mistake, and one beyond datetime's range (year 9999) would fail deep in a computation instead of at the field."""


def parse_duration(value: Any, field: str = "duration", max_s: float = MAX_DURATION_S) -> float:
    """Seconds from a number, a `timedelta`, or text such as `90s`, `15m`, `1h`, `7d`; a 4xx naming `field` for
    anything else, a negative or non-finite one, or one longer than `max_s`."""
    seconds: float | None = None
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        text = str(value).strip()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
        if text and text[-1] in units:
            try:
                seconds = float(text[:-1]) * units[text[-1]]
            except ValueError:
                pass
    if seconds is None or not math.isfinite(seconds):
        raise InvalidInputError(
            f"{field} {value!r}: expected a number and a unit, like 30m, 1h or 7d (or seconds)", {"field": field}
        )
    if seconds < 0 or seconds > max_s:
        raise InvalidInputError(
            f"{field} {value!r}: must be between 0 and {max_s / 86_400:g} days", {"field": field, "max_s": max_s}
        )
    return seconds


def read_yaml(path: str | Path, error: type[FinalmileError] = InvalidInputError) -> Any:
    """A YAML file's content (a pipeline, a stream, a monitor definition), or `error` naming the file and what is
    wrong with it: missing or unreadable, not UTF-8 text, not YAML."""
    import yaml

    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}", {"field": "file"}) from None
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text (byte {exc.start})", {"field": "file"}) from None
    except yaml.YAMLError as exc:
        raise error(f"{path}: not valid YAML: {exc}", {"field": "file"}) from None
