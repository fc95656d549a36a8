"""`finalmile.Client`: the facade (`sdk/base.py`) and its embedded transport, `LocalClient`, which carries out the
verbs in this process on the store under `FINALMILE_HOME`; `Client(url=..., token=...)` is the remote one
(`sdk/remote.py`), the token defaulting to `FINALMILE_TOKEN`."""

from __future__ import annotations

from contextlib import AbstractContextManager
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.backends.config import DeploymentConfig
from finalmile.config import FinalmileSettings
from finalmile.errors import MissingDependencyError
from finalmile.jobs.files import FileInferenceResult, Score
from finalmile.pipelines.loaded import RequestResult
from finalmile.pipelines.spec import PipelineSpec
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.registry.store import ModelSummary
from finalmile.schema import Schema
from finalmile.sdk.access import MemberVerbs
from finalmile.sdk.base import Client
from finalmile.sdk.edge import EdgeVerbs
from finalmile.sdk.explanations import ExplanationVerbs
from finalmile.sdk.jobs import JobVerbs
from finalmile.sdk.logs import LogVerbs
from finalmile.sdk.models import ModelVersion
from finalmile.sdk.observe import MonitorVerbs
from finalmile.sdk.pipelines import Pipeline
from finalmile.sdk.refs import model_ref, pipeline_name
from finalmile.sdk.remote import RemoteClient
from finalmile.sdk.replays import ReplayVerbs
from finalmile.sdk.rollouts import RolloutVerbs
from finalmile.services import Services

__all__ = ["Client", "LocalClient", "RemoteClient"]


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


class LocalClient(
    MemberVerbs,
    EdgeVerbs,
    JobVerbs,
    MonitorVerbs,
    LogVerbs,
    ReplayVerbs,
    RolloutVerbs,
    ExplanationVerbs,
    Client,
    transport="local",
):
    """`finalmile.Client()`: the verbs carried out in this process, on the store under `FINALMILE_HOME` (no token:
    it has the store's own rights)."""

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
        """Every version of `name`, oldest first."""
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

    def rollback_pipeline(self, name: str) -> str:
        """Deploy the version before the serving one; says what it did."""
        return self.services.rollback(name)

    def route_pipeline(self, name: str, variant: str) -> str:
        """Send all of the serving version's A/B traffic to `variant` (deployed as a new version)."""
        return self.services.route_all(name, variant)

    def deployments(self) -> list[dict[str, Any]]:
        """Every recorded deployment: pipeline, version, settings, and whether this process serves it now."""
        return self.services.deployment_status()

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
        """Score a CSV, Parquet or JSON-lines file into `output` (see `Pipeline.infer_file`), here or on Ray actors."""
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
        return super().infer_file(name, source, output, batch_size, log, progress, backend)


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
