"""`Client(url=...)`: the verbs of `finalmile.verbs.VERBS`, carried out by a finalmile server over HTTP — each
verb's route is read from the table, each answer decoded into the type the embedded client returns, and each error
raised as the class the embedded client raises."""

from __future__ import annotations

import io
import json
import os
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.access.store import MemberRecord, TokenRecord
from finalmile.arrow.files import write_table
from finalmile.arrow.frames import to_arrow
from finalmile.arrow.ipc import from_ipc
from finalmile.backends.config import DeploymentConfig
from finalmile.errors import (
    BadRequestError,
    PipelineNotFound,
)
from finalmile.logs.ground_truth import GroundTruthReceipt
from finalmile.logs.saved import SavedQuery
from finalmile.monitoring.store import AlertRecord
from finalmile.pipelines.spec import PipelineSpec
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.registry.store import ModelSummary, VersionRecord
from finalmile.schema import Schema
from finalmile.sdk.base import Client
from finalmile.sdk.models import ModelVersion
from finalmile.sdk.monitors import RemoteMonitor, monitor_definition
from finalmile.sdk.pipelines import Pipeline
from finalmile.sdk.refs import model_ref, pipeline_name
from finalmile.sdk.remote_edge import RemoteEdgeVerbs
from finalmile.sdk.remote_explanations import RemoteExplanationVerbs
from finalmile.sdk.remote_jobs import RemoteJobVerbs, as_file
from finalmile.sdk.remote_replays import RemoteReplayVerbs
from finalmile.sdk.remote_rollouts import RemoteRolloutVerbs
from finalmile.sdk.wire import RemoteResult, decode
from finalmile.serving.codecs import ARROW_STREAM
from finalmile.serving.codecs import arrow as arrow_codec


class RemoteModelVersion(ModelVersion):
    """A registered version as the server describes it: the same record as embedded; predicting runs on the
    server, through a deployed pipeline."""

    def __init__(self, body: dict[str, Any], client: Any = None) -> None:
        super().__init__(None, decode(VersionRecord, body))  # type: ignore[arg-type]
        self._client = client

    def explain(self, frame: Any, background: Any = None) -> Any:
        """Explained on the server (`Client.explain_model`)."""
        if self._client is None:
            raise BadRequestError(f"{self.ref}: get it from a client (client.model) to explain it")
        return self._client.explain_model(self.ref, frame, background)

    def __repr__(self) -> str:
        return f"RemoteModelVersion({self.ref}, framework={self.framework}, runtime={self.runtime})"

    def load(self, runtime: str = "auto", batch_rows: int = 1) -> Any:
        raise BadRequestError(
            f"{self.ref} lives on the server: deploy it in a pipeline and infer there (pipeline.infer)"
        )

    def sample(self) -> pa.Table | None:
        return self.load()


DEPLOY_TIMEOUT_S = 600.0
"""How long a deploy may take to answer: a server waits up to `FINALMILE_RAY_START_TIMEOUT_S` (300 s) for Ray
replicas to start, and says why they did not; the client must not give up first."""


class RemoteClient(
    RemoteJobVerbs,
    RemoteReplayVerbs,
    RemoteRolloutVerbs,
    RemoteExplanationVerbs,
    RemoteEdgeVerbs,
    Client,
    transport="remote",
):
    """`Client(url=...)`: the embedded client's verbs, carried out by a finalmile server over HTTP."""

    def __init__(
        self, *args: Any, url: str = "", token: str | None = None, timeout: float = 120.0, **kwargs: Any
    ) -> None:
        """`token` (default: `FINALMILE_TOKEN`) is sent as `Authorization: Bearer …` on every request; the embedded
        client's arguments (`home`, `workspace`, …) have no meaning here and are refused."""
        given = [k for k, v in kwargs.items() if v is not None] + (["home"] if args and args[0] is not None else [])
        if given:
            raise BadRequestError(f"{', '.join(given)}: for the embedded client; a server has its own store")
        if not url:
            raise BadRequestError("url: the server's address is required", {"field": "url"})
        self.url = url.rstrip("/")
        token = token if token is not None else os.environ.get("FINALMILE_TOKEN")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    # -- access (the token's workspace) -------------------------------------------------------------------------

    def whoami(self) -> dict[str, Any]:
        """The user, workspace and role this client's token acts as."""
        return dict(self._json("whoami"))

    def create_token(
        self, role: str, name: str = "", expires: str | None = None, user: str | None = None
    ) -> dict[str, Any]:
        body = self._json("create_token", json={"role": role, "name": name, "expires": expires, "user": user})
        return vars(decode(TokenRecord, body)) | {"token": body["token"]}

    def tokens(self) -> list[TokenRecord]:
        return [decode(TokenRecord, t) for t in self._json("tokens")]

    def revoke_token(self, token_id: int) -> TokenRecord:
        return decode(TokenRecord, self._json("revoke_token", params_in_path={"token_id": token_id}))

    def members(self) -> list[MemberRecord]:
        return [decode(MemberRecord, m) for m in self._json("members")]

    def set_member(self, user: str, role: str) -> MemberRecord:
        return decode(MemberRecord, self._json("set_member", params_in_path={"user": user}, json={"role": role}))

    def remove_member(self, user: str) -> None:
        self._call("remove_member", params_in_path={"user": user})

    # -- models -------------------------------------------------------------------------------------------------

    def upload_model(
        self,
        name: str,
        source: Any,
        framework: str | None = None,
        schema: Schema | dict[str, Any] | None = None,
        sample: Any = None,
        alias: str | None = None,
        tags: dict[str, str] | None = None,
        runtime: str = "auto",
    ) -> RemoteModelVersion:
        """Upload like the embedded client; in-memory models are serialised here in their framework's format."""
        with tempfile.TemporaryDirectory() as tmp:
            path = as_file(source, framework, Path(tmp))
            data: dict[str, str] = {"runtime": runtime}
            for key, value in (("framework", framework), ("alias", alias)):
                if value is not None:
                    data[key] = value
            if tags:
                data["tags"] = json.dumps(tags)
            if schema is not None:
                data["schema"] = json.dumps(schema.model_dump(mode="json") if isinstance(schema, Schema) else schema)
            files: dict[str, Any] = {"file": (path.name, path.read_bytes())}
            if sample is not None:
                buffer = io.BytesIO()
                pq.write_table(to_arrow(sample)[0], buffer)
                files["sample"] = ("sample.parquet", buffer.getvalue())
            body = self._json("upload_model", params_in_path={"name": name}, data=data, files=files)
            return RemoteModelVersion(body)

    def model(self, ref: Any) -> RemoteModelVersion:
        return RemoteModelVersion(self._json("model", params_in_path={"ref": model_ref(ref)}), self)

    def models(self) -> list[ModelSummary]:
        return [decode(ModelSummary, m) for m in self._json("models")]

    def model_versions(self, name: str) -> list[RemoteModelVersion]:
        return [RemoteModelVersion(v, self) for v in self._json("model_versions", params_in_path={"name": name})]

    def set_alias(self, name: str, version: int, alias: str) -> RemoteModelVersion:
        where = {"name": name, "alias": alias}
        return RemoteModelVersion(self._json("set_alias", params_in_path=where, json={"version": version}))

    def delete_alias(self, name: str, alias: str) -> None:
        self._call("delete_alias", params_in_path={"name": name, "alias": alias})

    def delete_model_version(self, name: str, version: int) -> None:
        self._call("delete_model_version", params_in_path={"name": name, "version": version})

    # -- pipelines ----------------------------------------------------------------------------------------------

    def pipeline(self, name: Any, version: int | None = None) -> Pipeline:
        versions = self.pipeline_versions(pipeline_name(name))
        chosen = next((v for v in reversed(versions) if version in (None, v.version)), None)
        if chosen is None:
            raise PipelineNotFound(pipeline_name(name), version)
        return Pipeline(self, chosen.name, PipelineSpec.model_validate(chosen.spec).steps)

    def pipelines(self) -> list[str]:
        return list(self._json("pipelines"))

    def pipeline_versions(self, name: str) -> list[PipelineVersionRecord]:
        body = self._json("pipeline_versions", params_in_path={"name": name})
        return [decode(PipelineVersionRecord, v) for v in body["versions"]]

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord:
        return decode(PipelineVersionRecord, self._json("create_pipeline_version", json=spec))

    def deploy_pipeline(self, name: str, version: int | None, config: DeploymentConfig) -> PipelineVersionRecord:
        body = config.model_dump() | {"version": version}
        answer = self._json("deploy_pipeline", params_in_path={"name": name}, json=body, timeout=DEPLOY_TIMEOUT_S)
        return decode(PipelineVersionRecord, answer)

    def undeploy_pipeline(self, name: str) -> None:
        self._call("undeploy_pipeline", params_in_path={"name": name})

    def rollback_pipeline(self, name: str) -> str:
        return str(self._json("rollback_pipeline", params_in_path={"name": name})["status"])

    def route_pipeline(self, name: str, variant: str) -> str:
        body = self._json("route_pipeline", params_in_path={"name": name}, json={"variant": variant})
        return str(body["status"])

    def deployments(self) -> list[dict[str, Any]]:
        return [d | {"updated_at": datetime.fromisoformat(d["updated_at"])} for d in self._json("deployments")]

    def infer_pipeline(self, name: str, table: pa.Table, log: bool = True) -> RemoteResult:
        """Infer on the server. It logs as its deployment says whatever `log` asks: a caller cannot turn off a
        server's record of what it served."""
        response = self._call(
            "infer_pipeline",
            params_in_path={"name": name},
            content=arrow_codec.encode(table),
            headers={"content-type": ARROW_STREAM},
        )
        return RemoteResult(arrow_codec.decode(response.content), dict(response.headers))

    # -- logs -------------------------------------------------------------------------------------------------------

    def query(self, sql: str) -> Any:
        import pandas as pd

        return pd.DataFrame(self._json("query", json={"sql": sql}))

    def pipeline_logs(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        params: dict[str, Any] = {"limit": limit or 10_000_000, "version": version, "variant": variant}
        params |= {"start": start and start.isoformat(), "end": end and end.isoformat()}
        params["columns"] = ",".join(columns) if columns else None
        response = self._call(
            "pipeline_logs",
            params_in_path={"name": name},
            params={k: v for k, v in params.items() if v is not None},
            headers={"accept": ARROW_STREAM},
        )
        return from_ipc(response.content)  # may be empty: not a request to validate

    def export_logs(
        self, name: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        table = self.pipeline_logs(name, start, end)
        table = table.take(pa.array(range(table.num_rows - 1, -1, -1)))  # oldest first, as the embedded export
        write_table(table, path)
        return table.num_rows

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> GroundTruthReceipt:
        rows = to_arrow(frame)[0].to_pylist()
        body = self._json("add_ground_truth", params_in_path={"name": name}, json={"key": key, "rows": rows})
        return GroundTruthReceipt(**body)

    def log_health(self) -> dict[str, Any]:
        return dict(self._json("log_health"))

    def saved_queries(self) -> list[SavedQuery]:
        return [decode(SavedQuery, q) for q in self._json("saved_queries")]

    def save_query(self, name: str, sql: str) -> SavedQuery:
        return decode(SavedQuery, self._json("save_query", params_in_path={"name": name}, json={"sql": sql}))

    def delete_query(self, name: str) -> None:
        self._call("delete_query", params_in_path={"name": name})

    # -- monitors, alerts, audit --------------------------------------------------------------------------------

    def build_monitor(
        self,
        name: str,
        pipeline: Any,
        kind: str,
        metric: str | None = None,
        column: str | None = None,
        window: Any = "1d",
        interval: Any = None,
        warning: float | None = None,
        alert: float | None = None,
        label: str | None = None,
        variant: str | None = None,
        group_by: str | None = None,
        actions: list[dict[str, Any]] | None = None,
        **options: Any,
    ) -> RemoteMonitor:
        """A monitor's definition, checked and stored by the server on `.save()`."""
        fields = {
            "name": name,
            "pipeline": pipeline_name(pipeline),
            "kind": kind,
            "metric": metric,
            "column": column,
            "window": window,
            "interval": interval,
            "warning": warning,
            "alert": alert,
            "label": label,
            "variant": variant,
            "group_by": group_by,
            "actions": actions,
        }
        return RemoteMonitor(self, monitor_definition(fields | options))

    def save_monitor(self, definition: dict[str, Any], start: datetime | None = None) -> RemoteMonitor:
        body = monitor_definition(definition) | ({"start": start.isoformat()} if start else {})
        return RemoteMonitor(self, self._json("save_monitor", json=body)["config"], saved=True)

    def monitor(self, name: str) -> RemoteMonitor:
        return RemoteMonitor(self, self._json("monitor", params_in_path={"name": name})["config"], saved=True)

    def monitors(self, pipeline: Any = None) -> list[RemoteMonitor]:
        chosen = pipeline_name(pipeline) if pipeline is not None else None
        found = [RemoteMonitor(self, m["config"], saved=True) for m in self._json("monitors")]
        return [m for m in found if chosen is None or m.config.pipeline == chosen]

    def monitor_results(self, name: str) -> Any:
        return _frame(self._json("monitor_results", params_in_path={"name": name}))

    def preview_monitor(self, name: str, start: datetime | None = None, end: datetime | None = None) -> Any:
        params = {k: v.isoformat() for k, v in (("start", start), ("end", end)) if v is not None}
        return _frame(self._json("preview_monitor", params_in_path={"name": name}, params=params))

    def delete_monitor(self, name: str) -> None:
        self._call("delete_monitor", params_in_path={"name": name})

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved monitor's windows that have ended on the server (at the server's clock: `now` is
        refused, as a server does not compute the future)."""
        if now is not None:
            raise BadRequestError("now: a server computes monitors at its own clock", {"field": "now"})
        return int(self._json("run_monitors")["stored"])

    def alerts(self, monitor: str | None = None) -> Any:
        import pandas as pd

        return pd.DataFrame(self._json("alerts", params={"monitor": monitor} if monitor else {}))

    def acknowledge_alert(self, alert_id: int) -> AlertRecord:
        body = self._json("acknowledge_alert", params_in_path={"alert_id": alert_id})
        return decode(AlertRecord, body | {"id": body["alert_id"]})

    def audit(self, target: str | None = None, limit: int | None = None) -> Any:
        import pandas as pd

        params = {k: v for k, v in (("target", target), ("limit", limit)) if v is not None}
        frame = pd.DataFrame(self._json("audit", params=params))
        if not frame.empty:
            frame["at"] = pd.to_datetime(frame["at"], format="ISO8601")
        return frame


def _frame(rows: list[dict[str, Any]]) -> Any:
    """Monitor results as the embedded client gives them: window bounds as timestamps."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    for column in ("window_start", "window_end"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], format="ISO8601")
    return frame
