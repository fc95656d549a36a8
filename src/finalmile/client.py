"""The SDK facade: `finalmile.Client()` works on the files under `FINALMILE_HOME` in this process (no token: it has
the store's own rights); `finalmile.Client(url=..., token=...)` speaks the same verbs to a server (`sdk/remote.py`),
the token defaulting to `FINALMILE_TOKEN`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.arrow.text import json_ready
from finalmile.backends.config import DeploymentConfig, deployment_config
from finalmile.config import FinalmileSettings
from finalmile.errors import BadRequestError, MissingDependencyError
from finalmile.jobs.files import FileInferenceResult, Score, infer_file
from finalmile.logs.ground_truth import GroundTruthReceipt, add_ground_truth
from finalmile.monitoring.build import build_config
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.spec import PipelineSpec
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.registry.store import ModelSummary
from finalmile.schema import Schema
from finalmile.sdk.jobs import JobVerbs
from finalmile.sdk.models import ModelVersion
from finalmile.sdk.monitors import Monitor
from finalmile.sdk.pipelines import Pipeline
from finalmile.sdk.refs import model_ref, pipeline_name
from finalmile.services import Services


def ray_file_scorer(settings: FinalmileSettings, workspace: str, name: str, version: int, log: bool) -> Score:
    """What each Ray file-inference actor builds: its own services with `name`'s version loaded (from the shared
    artifact store, hashes verified), scoring batch by batch; logged rows are made queryable after each batch, since Ray
    ends an actor without asking it to close."""
    services = Services(settings, None, workspace)
    record = services.pipelines.deployment(name)
    config = DeploymentConfig.model_validate(record.config if record is not None else {})
    services.local.deploy(name, version, config.model_copy(update={"backend": "local"}))

    def score(table: pa.Table) -> pa.Table:
        result = services.infer(name, table, version, log).table
        if log:
            services.logs.flush()
        return result

    return score


class Client(JobVerbs):
    """The one entry point for data scientists.

    >>> import finalmile
    >>> client = finalmile.Client()                  # files under ./.finalmile, SQLite metadata
    >>> mv = client.upload_model("fraud", model, sample=X_train.head(200))
    >>> mv.conversion["status"]                      # 'converted': served by ONNX Runtime
    >>> client.model("fraud@champion").predict(X)
    """

    def __new__(cls, *args: Any, url: str | None = None, token: str | None = None, **kwargs: Any) -> Any:
        # `Client(url=..., token=...)` talks to a server with the same verbs; everything else is embedded.
        if url is not None:
            from finalmile.sdk.remote import RemoteClient

            return RemoteClient(url, token)
        return super().__new__(cls)

    def __init__(
        self,
        home: str | Path | None = None,
        database_url: str | None = None,
        settings: FinalmileSettings | None = None,
        url: str | None = None,
        services: Services | None = None,
        token: str | None = None,
        workspace: str | None = None,
    ) -> None:
        self._root = services or Services.from_settings(home, database_url, settings)
        if self._root.job_gateway is None:
            self._root.job_gateway = _LazyGateway(self._root)
        self.services = self._root.for_workspace(workspace or self._root.settings.workspace)
        """The composition root of the workspace this client works in (`workspace`, default `FINALMILE_WORKSPACE`
        or `default`), shared with a server started from it."""
        self.settings = self.services.settings

    def close(self) -> None:
        self._root.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
    ) -> ModelVersion:
        """Register a new immutable version of model `name`.

        `source` is an in-memory model (scikit-learn, XGBoost, LightGBM, PyTorch `nn.Module`, ONNX `ModelProto`, or a
        class/instance with `predict(self, frame)`) or a path (`.onnx`, `.joblib`/`.pkl`, `.json`/`.ubj`, `.txt`,
        `.pt`/`.pt2`, `.py`, an MLflow model directory). Tree and linear models are converted to ONNX and served
        that way only when the converted outputs match on `sample` (or on rows drawn from the schema);
        `runtime="native"` keeps the original framework.
        """
        record = self.services.upload_model(
            name, source, framework=framework, schema=schema, sample=sample, alias=alias, tags=tags, runtime=runtime
        )
        return ModelVersion(self.services.loader, record)

    def model(self, ref: str | ModelVersion) -> ModelVersion:
        """A version by reference: `name` (latest), `name:3`, or `name@champion` (or a handle: a fresh copy)."""
        return ModelVersion(self.services.loader, self.services.metadata.get_by_ref(model_ref(ref)))

    def models(self) -> list[ModelSummary]:
        return self.services.metadata.list_models()

    def model_versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion(self.services.loader, r) for r in self.services.metadata.list_versions(name)]

    def set_alias(self, name: str, version: int, alias: str) -> ModelVersion:
        """Point `alias` (say `champion`) at `version`, moving it if it pointed elsewhere."""
        return ModelVersion(self.services.loader, self.services.set_alias(name, version, alias))

    def delete_alias(self, name: str, alias: str) -> None:
        self.services.delete_alias(name, alias)

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete a version and its artifacts (unless another version shares them); refused while pinned."""
        self.services.delete_model_version(name, version)

    # -- pipelines ----------------------------------------------------------------------------------------------

    def build_pipeline(self, name: str) -> Pipeline:
        """A new pipeline definition (an empty draft); `deploy()` stores it as the next version of `name`."""
        return Pipeline(self, name)

    def pipeline(self, name: str | Pipeline, version: int | None = None) -> Pipeline:
        """An existing pipeline, its draft set to the steps of `version` (default: the latest)."""
        record = self.services.pipelines.get_version(pipeline_name(name), version)
        return Pipeline(self, record.name, PipelineSpec.model_validate(record.spec).steps)

    def pipelines(self) -> list[str]:
        return self.services.pipelines.list_pipelines()

    def pipeline_versions(self, name: str) -> list[PipelineVersionRecord]:
        return self.services.pipelines.list_versions(name)

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord:
        """Store a pipeline definition as its next version, pinning every model reference to an exact version."""
        return self.services.create_pipeline_version(spec)

    def deploy_pipeline(self, name: str, version: int | None, config: DeploymentConfig) -> PipelineVersionRecord:
        """Load and warm `version` (default: the latest) beside what is serving, record the deployment, swap it in."""
        return self.services.deploy(name, version, config)

    def undeploy_pipeline(self, name: str) -> None:
        self.services.undeploy(name)

    def infer_pipeline(self, name: str, table: pa.Table, log: bool = True) -> RequestResult:
        """Run a deployed pipeline in this process, through the same batching, metrics and log as a server."""
        return self.services.infer(name, table, log=log)

    def infer_file(
        self,
        name: str,
        source: str | Path,
        output: str | Path,
        batch_size: int = 10_000,
        log: bool = False,
        progress: bool = True,
        backend: str = "local",
    ) -> FileInferenceResult:
        """Score a CSV, Parquet or JSON-lines file into `output` (see `Pipeline.infer_file`)."""
        serving = self.services.dataplane.serving(name)  # not deployed: said before any file is touched
        if backend == "ray":
            try:
                from finalmile.backends.ray import join
                from finalmile.jobs.files_ray import infer_file_on_ray
            except ImportError as exc:
                raise MissingDependencyError("ray", "ray") from exc
            services = self.services
            join(services.settings.ray_address)  # the cluster a Ray deployment of this process would use
            make = partial(ray_file_scorer, services.settings, services.workspace, name, serving.version, log)
            return infer_file_on_ray(make, name, source, output, batch_size, progress)
        if backend != "local":
            raise BadRequestError(f"backend: '{backend}' is not one of local, ray", {"field": "backend"})

        def score(table: pa.Table) -> pa.Table:
            return self.services.infer(name, table, log=log).table

        return infer_file(score, name, source, output, batch_size, progress)

    def apply_pipeline(self, definition: str | Path | dict[str, Any], deploy: bool = False) -> Pipeline:
        """Create a pipeline version from YAML (a path) or a dict, as `finalmile pipelines apply` does."""
        spec, deployment = PipelineSpec.read(definition)
        config = deployment_config(deployment)  # a bad `deployment:` section is refused before anything is stored
        pipeline = Pipeline(self, spec.name, spec.steps)
        version = pipeline.create_version()
        if deploy:
            self.deploy_pipeline(spec.name, version.version, config)
        return pipeline

    # -- logs ---------------------------------------------------------------------------------------------------

    def query(self, sql: str) -> Any:
        """Read-only DuckDB SQL over `logs`, `ground_truth`, `models`, `pipelines`; returns a pandas DataFrame."""
        table = self.services.reader.query(sql)
        try:
            return table.to_pandas()
        except pa.ArrowNotImplementedError:  # a union, which pandas has no column for: as the API answers it
            return json_ready(table).to_pandas()

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
        """A pipeline's log rows (what `Pipeline.logs` returns, as Arrow)."""
        return self.services.reader.pipeline_logs(name, start, end, limit, version, variant, columns)

    def export_logs(
        self, name: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Write a time range of a pipeline's log to Parquet, CSV or JSON lines (by extension); returns the rows."""
        return self.services.reader.export(name, path, start, end)

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> GroundTruthReceipt:
        return add_ground_truth(self.services.reader, name, frame, key)

    # -- monitoring ---------------------------------------------------------------------------------------------

    def build_assay(
        self,
        name: str,
        pipeline: str | Pipeline,
        column: str,
        baseline: Any,
        window: Any = "1d",
        interval: Any = None,
        metric: str = "psi",
        warning: float | None = None,
        alert: float | None = None,
        bins: int = 5,
        binning: str = "quantile",
        edges: list[float] | None = None,
        variant: str | None = None,
        group_by: str | None = None,
        actions: list[dict[str, Any]] | None = None,
    ) -> Monitor:
        """A drift assay on one logged column (`in_amount`, `out_score`), checked now, saved with `.save()`.

        `baseline`: a DataFrame, Series or array (say, the training data), a `(start, end)` range of the pipeline's
        own log, or a model reference whose stored sample is used (`"fraud:1"`). `window`/`interval`: seconds,
        a `timedelta` or `"1h"`; a window ends every interval (default: the window). Metrics: psi (default),
        max_diff, sum_diff, jensen_shannon, ks, ks_pvalue, wasserstein, chi_squared (categories). `actions`:
        `{"kind": "webhook", "url": …}`, `{"kind": "rollback"}`, `{"kind": "route", "variant": …}`,
        `{"kind": "undeploy"}`.
        """
        return self.build_monitor(
            name,
            pipeline,
            "drift",
            metric=metric,
            column=column,
            window=window,
            interval=interval,
            warning=warning,
            alert=alert,
            variant=variant,
            group_by=group_by,
            actions=actions,
            baseline=baseline,
            binning={"mode": binning, "bins": bins, "edges": edges},
        )

    def build_monitor(
        self,
        name: str,
        pipeline: str | Pipeline,
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
    ) -> Monitor:
        """A monitor of `kind` `check_rate` (column = the check's name), `performance` (metric: accuracy, precision,
        recall, f1, roc_auc, log_loss, rmse, mae, r2; `label` = the ground-truth column), `error_rate` or
        `latency_p99` (milliseconds); thresholds, windows and actions as for `build_assay`."""
        if isinstance(options.get("baseline"), ModelVersion):
            options["baseline"] = model_ref(options["baseline"])  # its stored sample
        config, baseline = build_config(
            self.services.monitoring,
            name=name,
            pipeline=pipeline_name(pipeline),
            kind=kind,
            metric=metric,
            column=column,
            window=window,
            interval=interval,
            warning=warning,
            alert=alert,
            label=label,
            variant=variant,
            group_by=group_by,
            actions=actions,
            **options,
        )
        return Monitor(self.services.monitoring, config, baseline=baseline)

    def monitor(self, name: str) -> Monitor:
        saved = self.services.monitors.get(name)
        return Monitor(self.services.monitoring, saved.config, saved)

    def monitors(self, pipeline: str | Pipeline | None = None) -> list[Monitor]:
        chosen = pipeline_name(pipeline) if pipeline is not None else None
        return [Monitor(self.services.monitoring, s.config, s) for s in self.services.monitors.all(chosen)]

    def alerts(self, monitor: str | None = None) -> Any:
        """Alerts raised so far (every monitor, or one), oldest first, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([vars(a) for a in self.services.monitors.alerts(monitor)])

    def audit(self, target: str | None = None) -> Any:
        """Every state change (upload, alias, version, deploy, undeploy, rollback or route by a monitor), oldest
        first, as a DataFrame: at, actor, action, target, before, after; `target` filters (`"pipeline fraud"`)."""
        import pandas as pd

        return pd.DataFrame([vars(e) for e in self.services.audit.entries(target)])

    def build_stream(
        self,
        name: str,
        pipeline: str | Pipeline,
        source: dict[str, Any],
        sink: dict[str, Any],
        **options: Any,
    ) -> dict[str, Any]:
        """Bind a deployed pipeline to a broker source and sink (`{"broker": "nats", "subject": "txns"}`); every
        `finalmile serve` runs it. `options`: batch_size, max_delay_ms, format, max_attempts, dead_letter, group."""
        target = pipeline.name if isinstance(pipeline, Pipeline) else pipeline
        definition = {"name": name, "pipeline": target, "source": source, "sink": sink} | options
        return self.services.apply_stream(definition).payload()

    def streams(self) -> list[dict[str, Any]]:
        """Every stream with the status its runner last reported (lag, messages/s, failures, dead letters)."""
        return [r.payload() for r in self.services.streams.all()]

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved, enabled monitor's windows that have ended (what `finalmile serve` does every few
        seconds); returns how many results were stored."""
        return self.services.run_monitors(now)


class _LazyGateway:
    """The jobs' gateway of an embedded client: the API server it needs starts on the first job run, and FastAPI
    is imported only then (a client that runs no job never pays for it)."""

    def __init__(self, root: Services) -> None:
        self._root = root
        self._made: Any = None

    def __call__(self, user: str, workspace: str, role: str) -> AbstractContextManager[tuple[str, str]]:
        if self._made is None:
            from finalmile.http.server import JobGateway

            self._made = JobGateway(self._root)
        return self._made(user, workspace, role)

    def close(self) -> None:
        if self._made is not None:
            self._made.close()
