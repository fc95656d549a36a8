"""The SDK facade. Embedded for now: metadata, artifacts and models live under `FINALMILE_HOME`."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.config import FinalmileSettings
from finalmile.errors import FinalmileError
from finalmile.logs.ground_truth import GroundTruthReceipt, add_ground_truth
from finalmile.logs.query import export_logs, pipeline_logs, run_query
from finalmile.logs.writer import LogWriter
from finalmile.monitoring.monitor import Monitor, build_monitor, run_monitor
from finalmile.monitoring.store import MonitorStore
from finalmile.pipelines.checks import compile_check
from finalmile.pipelines.pipeline import Pipeline
from finalmile.pipelines.spec import CheckStepSpec, ModelStepSpec, PipelineSpec, walk
from finalmile.pipelines.store import PipelineStore, PipelineVersionRecord
from finalmile.registry.artifacts import ArtifactStore
from finalmile.registry.schema import Schema
from finalmile.registry.store import MetadataStore, ModelSummary
from finalmile.registry.upload import current_user, upload_model
from finalmile.registry.versions import ModelVersion
from finalmile.serving.codecs import require_rows
from finalmile.serving.deployments import DeploymentConfig, DeploymentManager, RequestResult

_REF = re.compile(r"^(?P<name>[^:@]+)(?::(?P<version>\d+)|@(?P<alias>[^:@]+))?$")


class Client:
    """The one entry point for data scientists.

    >>> import finalmile
    >>> client = finalmile.Client()                  # files under ./.finalmile, SQLite metadata
    >>> mv = client.upload_model("fraud", model, sample=X_train.head(200))
    >>> mv.conversion["status"]                      # 'converted': served by ONNX Runtime
    >>> client.model("fraud@champion").predict(X)
    """

    def __new__(cls, *args: Any, url: str | None = None, **kwargs: Any) -> Any:
        # `Client(url=...)` talks to a server with the same verbs; everything else is embedded.
        if url is not None:
            from finalmile.remote import RemoteClient

            return RemoteClient(url)
        return super().__new__(cls)

    def __init__(
        self,
        home: str | Path | None = None,
        database_url: str | None = None,
        settings: FinalmileSettings | None = None,
        url: str | None = None,
    ) -> None:
        overrides: dict[str, Any] = {}
        if home is not None:
            overrides["home"] = Path(home)
        if database_url is not None:
            overrides["database_url"] = database_url
        base = settings or FinalmileSettings()
        self.settings = base.model_copy(update=overrides)
        self.settings.home.mkdir(parents=True, exist_ok=True)
        self.settings.home = self.settings.home.resolve()  # a later chdir must not move the store
        self._store = MetadataStore(self.settings.resolved_database_url())
        self._artifacts = ArtifactStore(self.settings.home / "artifacts")
        self._pipelines = PipelineStore(self._store)
        self._deployments = DeploymentManager(self)
        self._logs = LogWriter(self.settings.home / "logs")
        self._deployments.hooks.append(self._logs)
        self._deployments.failure_hooks.append(self._logs.failed)
        self._monitors = MonitorStore(self._store)

    def close(self) -> None:
        self._deployments.close()
        self._logs.close()
        self._store.close()

    def query(self, sql: str) -> Any:
        """Read-only DuckDB SQL over `logs`, `ground_truth`, `models`, `pipelines`; returns a pandas DataFrame."""
        self._logs.flush()
        return run_query(self, sql).to_pandas()

    def pipeline_logs(self, name: str, *args: Any) -> pa.Table:
        """A pipeline's log rows (what `Pipeline.logs` returns, as Arrow)."""
        self._logs.flush()
        return pipeline_logs(self, name, *args)

    def export_logs(self, name: str, path: str | Path, start: Any = None, end: Any = None) -> int:
        """Write a time range of a pipeline's log to Parquet, CSV or JSON lines (by extension); returns the rows."""
        self._logs.flush()
        return export_logs(self, name, path, start, end)

    def add_ground_truth(self, name: str, frame: Any, key: str = "request_id") -> GroundTruthReceipt:
        self._logs.flush()
        return add_ground_truth(self, name, frame, key)

    # -- monitoring -----------------------------------------------------------------------------------------------

    def build_assay(
        self,
        name: str,
        pipeline: str,
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
        return build_monitor(
            self,
            name=name,
            pipeline=pipeline,
            kind="drift",
            column=column,
            baseline=baseline,
            window=window,
            interval=interval,
            metric=metric,
            warning=warning,
            alert=alert,
            binning={"mode": binning, "bins": bins, "edges": edges},
            variant=variant,
            group_by=group_by,
            actions=actions,
        )

    def build_monitor(
        self,
        name: str,
        pipeline: str,
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
        return build_monitor(
            self,
            name=name,
            pipeline=pipeline,
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

    def monitor(self, name: str) -> Monitor:
        saved = self._monitors.get(name)
        return Monitor(self, saved.config, saved)

    def monitors(self, pipeline: str | None = None) -> list[Monitor]:
        return [Monitor(self, s.config, s) for s in self._monitors.all(pipeline)]

    def alerts(self, monitor: str | None = None) -> Any:
        """Alerts raised so far (every monitor, or one), oldest first, as a DataFrame."""
        import pandas as pd

        return pd.DataFrame([vars(a) for a in self._monitors.alerts(monitor)])

    def run_monitors(self, now: Any = None) -> int:
        """Compute every saved, enabled monitor's windows that have ended (what `finalmile serve` does every few
        seconds); returns how many results were stored."""
        stored = 0
        for saved in self._monitors.all():
            if saved.enabled:
                stored += len(run_monitor(self, self._monitors, saved, now))
        return stored

    def _user(self) -> str:
        return self.settings.user or current_user()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
        record = upload_model(
            self._store,
            self._artifacts,
            self.settings,
            name,
            source,
            framework=framework,
            schema=schema,
            sample=sample,
            alias=alias,
            tags=tags,
            runtime=runtime,
        )
        return ModelVersion(self, record)

    def model(self, ref: str) -> ModelVersion:
        """A version by reference: `name` (latest), `name:3`, or `name@champion`."""
        name, version, alias = parse_ref(ref)
        return ModelVersion(self, self._store.get_version(name, version=version, alias=alias))

    def models(self) -> list[ModelSummary]:
        return self._store.list_models()

    def model_versions(self, name: str) -> list[ModelVersion]:
        return [ModelVersion(self, r) for r in self._store.list_versions(name)]

    def set_alias(self, name: str, version: int, alias: str) -> ModelVersion:
        """Point `alias` (say `champion`) at `version`, moving it if it pointed elsewhere."""
        return ModelVersion(self, self._store.set_alias(name, version, alias))

    def delete_alias(self, name: str, alias: str) -> None:
        self._store.delete_alias(name, alias)

    def delete_model_version(self, name: str, version: int) -> None:
        """Delete a version and its artifacts (unless another version shares them); refused while pinned."""
        record = self._store.delete_version(name, version)
        for digest in (record.artifact_sha256, record.onnx_sha256, record.sample_sha256):
            if digest and not self._store.artifact_in_use(digest):
                self._artifacts.delete(digest)

    # -- pipelines ----------------------------------------------------------------------------------------------

    def build_pipeline(self, name: str) -> Pipeline:
        """A new pipeline definition (an empty draft); `deploy()` stores it as the next version of `name`."""
        return Pipeline(self, name)

    def pipeline(self, name: str, version: int | None = None) -> Pipeline:
        """An existing pipeline, its draft set to the steps of `version` (default: the latest)."""
        record = self._pipelines.get_version(name, version)
        return Pipeline(self, name, PipelineSpec.model_validate(record.spec).steps)

    def pipelines(self) -> list[str]:
        return self._pipelines.list_pipelines()

    def create_pipeline_version(self, spec: dict[str, Any]) -> PipelineVersionRecord:
        """Store a pipeline definition as its next version, pinning every model reference to an exact version."""
        parsed = PipelineSpec.from_dict(spec)
        refs = []
        for step in walk(list(parsed.steps)):
            if isinstance(step, ModelStepSpec):
                mv = self.model(step.model)
                step.model = mv.ref
                refs.append((mv.name, mv.version))
            elif isinstance(step, CheckStepSpec):
                compile_check(step.expression)  # refuse a malformed rule now, not while serving
        stored = parsed.model_dump(mode="json")
        try:
            latest = self._pipelines.get_version(parsed.name)
            if latest.spec == stored:
                return latest
        except FinalmileError:
            pass
        return self._pipelines.create_version(parsed.name, stored, refs, self._user())

    def deploy_pipeline(self, name: str, version: int | None, config: DeploymentConfig) -> PipelineVersionRecord:
        """Load and warm `version` (default: the latest) beside what is serving, record the deployment, swap it in."""
        record = self._pipelines.get_version(name, version)
        loaded = self._deployments.load(name, record.version)  # a version that cannot load is never recorded
        self._pipelines.set_deployment(name, record.version, config.model_dump())
        self._deployments.install(name, loaded, config)  # after the record, so that a concurrent sync keeps it
        return record

    def undeploy_pipeline(self, name: str) -> None:
        self._pipelines.deactivate(name)
        self._deployments.undeploy(name)

    def infer_pipeline(self, name: str, table: pa.Table, log: bool = True) -> RequestResult:
        """Run a deployed pipeline in this process (no batching: the caller's thread runs it)."""
        current = self._deployments.get(name).current
        started = time.perf_counter()
        try:
            batch = current.run(current.conform(require_rows(table)), hooks=log)
        except Exception as exc:
            if log:
                self._deployments.failed(current, table.num_rows, exc, started)
            raise
        return current.split(batch, [(0, table.num_rows)])[0]

    def apply_pipeline(self, definition: str | Path | dict[str, Any], deploy: bool = False) -> Pipeline:
        """Create a pipeline version from YAML (a path) or a dict, as `finalmile pipelines apply` does."""
        spec = (
            PipelineSpec.from_dict(definition) if isinstance(definition, dict) else PipelineSpec.from_yaml(definition)
        )
        pipeline = Pipeline(self, spec.name, spec.steps)
        version = pipeline.create_version()
        if deploy:
            pipeline.deploy(version.version)
        return pipeline


def parse_ref(ref: str) -> tuple[str, int | None, str | None]:
    """`fraud` -> latest; `fraud:3` -> version 3; `fraud@champion` -> what the alias points at."""
    match = _REF.match(ref.strip())
    if not match:
        raise FinalmileError(f"invalid model reference {ref!r}: use NAME, NAME:VERSION or NAME@ALIAS")
    version = match.group("version")
    return match.group("name"), int(version) if version else None, match.group("alias")
