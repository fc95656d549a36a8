"""`finalmile.Client`: one facade over two transports — this process's store (`Client()`) or a server
(`Client(url=..., token=...)`). Each transport implements every verb of `finalmile.verbs.VERBS` with the same
parameters, results and errors; the verbs made of other verbs are written here once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa

from finalmile.backends.config import deployment_config
from finalmile.errors import BadRequestError
from finalmile.jobs.files import FileInferenceResult, infer_file
from finalmile.pipelines.spec import PipelineSpec
from finalmile.sdk.pipelines import Pipeline

TRANSPORTS: dict[str, type[Client]] = {}
"""`local` and `remote`: each registers itself by subclassing `Client`."""


class Client:
    """The one entry point for data scientists.

    >>> import finalmile
    >>> client = finalmile.Client()                  # files under ./.finalmile, SQLite metadata
    >>> mv = client.upload_model("fraud", model, sample=X_train.head(200))
    >>> mv.conversion["status"]                      # 'converted': served by ONNX Runtime
    >>> client.model("fraud@champion").predict(X)
    >>> team = finalmile.Client(url="https://ml.example.com", token=...)   # the same verbs, on a server
    """

    def __init_subclass__(cls, transport: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if transport:
            TRANSPORTS[transport] = cls

    def __new__(cls, *args: Any, url: str | None = None, **kwargs: Any) -> Any:
        if cls is Client:
            cls = TRANSPORTS["remote" if url is not None else "local"]
        return super().__new__(cls)

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def infer_pipeline(self, name: str, table: pa.Table, log: bool = True) -> Any:
        raise NotImplementedError

    def create_pipeline_version(self, spec: dict[str, Any]) -> Any:
        raise NotImplementedError

    def deploy_pipeline(self, name: str, version: int | None, config: Any) -> Any:
        raise NotImplementedError

    def build_monitor(self, name: str, pipeline: str | Pipeline, kind: str, **options: Any) -> Any:
        raise NotImplementedError

    # -- verbs made of verbs --------------------------------------------------------------------------------------

    def build_pipeline(self, name: str) -> Pipeline:
        """A new pipeline definition (an empty draft); `deploy()` stores it as the next version of `name`."""
        return Pipeline(self, name)

    def apply_pipeline(self, definition: str | Path | dict[str, Any], deploy: bool = False) -> Pipeline:
        """Create a pipeline version from YAML (a path) or a dict, as `finalmile pipelines apply` does; `deploy`
        also deploys it with the file's `deployment:` section."""
        spec, deployment = PipelineSpec.read(definition)
        config = deployment_config(deployment)  # a bad `deployment:` section is refused before anything is stored
        pipeline = Pipeline(self, spec.name, spec.steps)
        version = pipeline.create_version()
        if deploy:
            self.deploy_pipeline(spec.name, version.version, config)
        return pipeline

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
        """Score a CSV, Parquet or JSON-lines file into `output` batch by batch (see `Pipeline.infer_file`); the
        file is read and written here, each batch scored by this client's transport."""
        if backend != "local":
            raise BadRequestError(f"backend: '{backend}' is not one of local, ray", {"field": "backend"})

        def score(table: pa.Table) -> pa.Table:
            result: pa.Table = self.infer_pipeline(name, table, log=log).table
            return result

        return infer_file(score, name, source, output, batch_size, progress)

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
    ) -> Any:
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
