"""`Pipeline`: the SDK handle to build, version, deploy and call a pipeline."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from finalmile.arrow.frames import to_arrow
from finalmile.backends.config import Autoscaling, deployment_config
from finalmile.pipelines.spec import (
    CheckStepSpec,
    GuardrailStepSpec,
    ModelStepSpec,
    PipelineSpec,
    ShadowStepSpec,
    SplitStepSpec,
    StepSpec,
    VariantSpec,
)
from finalmile.pipelines.store import PipelineVersionRecord
from finalmile.sdk.models import ModelVersion

StepLike = StepSpec | ModelVersion | str


def model_step(model: str | ModelVersion) -> ModelStepSpec:
    """A step that runs a model version: `"fraud@champion"`, `"fraud:3"` or a `ModelVersion`."""
    return ModelStepSpec(model=model if isinstance(model, str) else model.ref)


def check(name: str, expression: str) -> CheckStepSpec:
    """A rule that flags rows without failing them, e.g. `check("high", "out.score > 0.95")`."""
    return CheckStepSpec(name=name, expression=expression)


def split(variants: dict[str, tuple[float, list[StepLike] | StepLike]], key: str | None = None) -> SplitStepSpec:
    """An A/B split: `split({"a": (0.9, "fraud:1"), "b": (0.1, "fraud:2")}, key="customer")`."""
    return SplitStepSpec(
        variants=[VariantSpec(name=n, weight=w, steps=_steps(s)) for n, (w, s) in variants.items()], key=key
    )


def shadow(champion: list[StepLike] | StepLike, challengers: dict[str, list[StepLike] | StepLike]) -> ShadowStepSpec:
    """The champion answers; challengers see the same input and go to the log only."""
    return ShadowStepSpec(champion=_steps(champion), challengers={n: _steps(s) for n, s in challengers.items()})


def _steps(steps: list[StepLike] | StepLike) -> list[StepSpec]:
    items = steps if isinstance(steps, list) else [steps]
    return [
        s
        if isinstance(s, (ModelStepSpec, CheckStepSpec, GuardrailStepSpec, SplitStepSpec, ShadowStepSpec))
        else model_step(s)
        for s in items
    ]


class Pipeline:
    """A named pipeline: a draft of steps, its immutable versions, and its deployment.

    >>> p = client.build_pipeline("fraud").add_model_step("fraud@champion").add_check("high", "out.score > 0.95")
    >>> p.deploy(max_batch_size=64)       # creates version 1 (pinning fraud:N), loads, warms, serves
    >>> p.infer(frame)                    # pandas in, pandas out
    """

    def __init__(self, client: Any, name: str, steps: list[StepSpec] | None = None) -> None:
        """`client`: a `finalmile.Client`, embedded or remote; the handle calls only its verbs."""
        self._client = client
        self.name = name
        self.steps: list[StepSpec] = list(steps or [])

    def __repr__(self) -> str:
        return f"Pipeline({self.name}, {len(self.steps)} steps)"

    # -- building -----------------------------------------------------------------------------------------------

    def add_step(self, step: StepSpec) -> Pipeline:
        self.steps.append(step)
        return self

    def add_model_step(self, model: str | ModelVersion) -> Pipeline:
        return self.add_step(model_step(model))

    def add_transform_step(self, source: Any, name: str | None = None) -> Pipeline:
        """Pre/post-processing code (a class with `predict(self, frame)`), stored and versioned like a Python model."""
        transform = self._client.upload_model(name or f"{self.name}-transform-{len(self.steps) + 1}", source)
        return self.add_model_step(transform)

    def add_check(self, name: str, expression: str) -> Pipeline:
        return self.add_step(check(name, expression))

    def add_guardrail(
        self,
        name: str,
        *,
        patterns: list[str] | None = None,
        blocked_words: list[str] | None = None,
        pii: list[str] | None = None,
        action: str = "flag",
        column: str = "completion",
        refusal: str = "I can't help with that.",
    ) -> Pipeline:
        """Text rules over a generated column: `action` `flag` (logged as a check), `redact` or `refuse`, e.g.
        `add_guardrail("pii", pii=["email", "card", "phone"], action="redact")`."""
        spec = {"name": name, "patterns": patterns or [], "blocked_words": blocked_words or [], "pii": pii or []}
        return self.add_step(
            PipelineSpec.from_dict(
                {
                    "name": self.name,
                    "steps": [spec | {"kind": "guardrail", "action": action, "column": column, "refusal": refusal}],
                }  # fmt: skip
            ).steps[0]
        )

    def add_split(
        self, variants: dict[str, tuple[float, list[StepLike] | StepLike]], key: str | None = None
    ) -> Pipeline:
        return self.add_step(split(variants, key))

    def add_shadow(
        self, champion: list[StepLike] | StepLike, challengers: dict[str, list[StepLike] | StepLike]
    ) -> Pipeline:
        return self.add_step(shadow(champion, challengers))

    def clear(self) -> Pipeline:
        self.steps = []
        return self

    # -- versions -----------------------------------------------------------------------------------------------

    def create_version(self) -> PipelineVersionRecord:
        """Store the draft as the next version, every model reference pinned to an exact version.

        If the draft is exactly the latest version, that version is returned instead of a duplicate.
        """
        return self._client.create_pipeline_version(
            PipelineSpec(name=self.name, steps=self.steps).model_dump(mode="json")
        )

    def versions(self) -> list[PipelineVersionRecord]:
        return self._client.pipeline_versions(self.name)

    # -- deployment ---------------------------------------------------------------------------------------------

    def deploy(
        self,
        version: int | None = None,
        workers: int = 1,
        max_batch_size: int = 64,
        max_delay_ms: float = 1.0,
        logging: bool = True,
        durability: Literal["fast", "strict"] = "fast",
        backend: Literal["local", "ray"] | None = None,
        replicas: int = 1,
        autoscaling: Autoscaling | dict[str, Any] | None = None,
        replica_cpus: float = 0.5,
    ) -> PipelineVersionRecord:
        """Deploy `version` (default: the draft, stored as a new version if it changed): load, warm, then swap.

        Batching: concurrent requests are coalesced up to `max_batch_size` rows; a batch waits up to
        `max_delay_ms` for more only under concurrency; `max_delay_ms=0` turns batching off. Logging: every row
        goes to the inference log unless `logging=False`; `durability="strict"` puts it on disk before the response.
        Placement: `backend="ray"` runs it as Ray Serve replicas (`replicas=N`, or `autoscaling={"min_replicas": 1,
        "max_replicas": 4}`), each reserving `replica_cpus`; unset, the server's default backend.
        """
        if version is None:
            version = self.create_version().version
        config = deployment_config(
            workers=workers,
            max_batch_size=max_batch_size,
            max_delay_ms=max_delay_ms,
            logging=logging,
            durability=durability,
            backend=backend,
            replicas=replicas,
            autoscaling=autoscaling,
            replica_cpus=replica_cpus,
        )
        return self._client.deploy_pipeline(self.name, version, config)

    def undeploy(self) -> None:
        self._client.undeploy_pipeline(self.name)

    def logs(
        self,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
        output: str = "pandas",
    ) -> Any:
        """The inference log of this pipeline, newest first, as pandas (or `output="arrow"` / `"polars"`)."""
        table = self._client.pipeline_logs(self.name, start, end, limit, version, variant, columns)
        if output == "arrow":
            return table
        if output == "polars":
            import polars as pl

            return pl.from_arrow(table)
        return table.to_pandas()

    def export_logs(self, path: str | Path, start: datetime | None = None, end: datetime | None = None) -> int:
        """Write the log rows from `start` to `end` (oldest first) to a Parquet, CSV or JSON-lines file, streamed;
        returns the number of rows written."""
        return self._client.export_logs(self.name, path, start, end)

    def add_ground_truth(self, frame: Any, key: str = "request_id") -> Any:
        """Labels that arrived later, keyed by `request_id` or by a logged input column; the newest label wins.

        Returns counts of rows received, keys matched in the log, and unknown keys (stored all the same).
        """
        return self._client.add_ground_truth(self.name, frame, key)

    def infer_file(
        self,
        source: str | Path,
        output: str | Path,
        batch_size: int = 10_000,
        log: bool = False,
        progress: bool = True,
        backend: str = "local",
    ) -> Any:
        """Score a CSV, Parquet or JSON-lines file of any size into `output` (inputs and outputs side by side).

        Streamed in batches with bounded memory and a progress bar; rerunning after an interruption resumes where it
        stopped without duplicating rows. `log=True` also records the rows in the inference log. `backend="ray"`
        scores on a pool of Ray actors (the cluster this process joined, or a local one): the same output, no resume.
        """
        return self._client.infer_file(self.name, source, output, batch_size, log, progress, backend=backend)

    def replay(
        self,
        candidate: Any,
        start: Any = None,
        end: Any = None,
        sample: float | None = None,
        seed: int = 0,
        segment_by: str | None = None,
        label: str | None = None,
    ) -> Any:
        """This pipeline's logged traffic from `start` to `end` through `candidate` (a version number, a model
        version such as `"fraud:7"`, or a definition), compared with what was served (see `Client.replay`)."""
        return self._client.replay(self.name, candidate, start, end, sample, seed, segment_by, label)

    def explain(self, request_id: str) -> Any:
        """Why a logged request was scored as it was: each feature's contribution, per row (`Client.explain`)."""
        return self._client.explain(self.name, request_id)

    def rollout(self, candidate: Any, **plan: Any) -> Any:
        """Bring `candidate` in step by step beside the serving champion, judged against it at each step (see
        `Client.rollout` for `steps`, `step_every`, `gates`, `min_rows`, `key`, `on_hold`, `alias`)."""
        return self._client.rollout(self.name, candidate, **plan)

    def infer(self, frame: Any) -> Any:
        """Run the deployed version (in-process, or on the server for a remote client); same frame type back."""
        table, back = to_arrow(frame)
        return back(self._client.infer_pipeline(self.name, table).table)

    def infer_with_metadata(self, frame: Any) -> Any:
        """The result with its provenance: `.table`, `.metadata()` (version, variant and model versions per row)."""
        return self._client.infer_pipeline(self.name, to_arrow(frame)[0])
