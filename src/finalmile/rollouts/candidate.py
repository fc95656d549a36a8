"""What a candidate is: a pipeline version, a model version in place of the one the pipeline serves, or a whole
definition — always resolved to a pinned pipeline definition before anything runs."""

from __future__ import annotations

from typing import Any

from finalmile.errors import InvalidInputError
from finalmile.pipelines.spec import ModelStepSpec, PipelineSpec, ShadowStepSpec, SplitStepSpec, StepSpec, pin_spec
from finalmile.pipelines.store import PipelineStore
from finalmile.registry.store import MetadataStore


def resolve_candidate(
    pipelines: PipelineStore, models: MetadataStore, pipeline: str, candidate: Any
) -> tuple[str, dict[str, Any]]:
    """(How the candidate is named, its pinned definition). `candidate`: a version number of `pipeline`, a model
    reference (`fraud:7`, `fraud@challenger`: the served definition with that model's steps swapped for it; the model
    alone when the pipeline has no step of that name) or a definition (a dict of steps)."""
    if isinstance(candidate, bool) or candidate is None:
        raise InvalidInputError("candidate: give a pipeline version, a model reference or a definition", _FIELD)
    if isinstance(candidate, int) or (isinstance(candidate, str) and candidate.isdigit()):
        record = pipelines.get_version(pipeline, int(candidate))
        return f"{pipeline} version {record.version}", record.spec
    if isinstance(candidate, dict):
        parsed, _ = pin_spec({"name": pipeline} | candidate, models.get_by_ref)
        return "a pipeline definition", parsed.model_dump(mode="json")
    if not isinstance(candidate, str) or not candidate.strip():
        raise InvalidInputError("candidate: give a pipeline version, a model reference or a definition", _FIELD)
    found = models.get_by_ref(candidate)  # an unknown model is a 404 that names it
    pinned = f"{found.name}:{found.version}"
    served = pipelines.deployment(pipeline)
    base = pipelines.get_version(pipeline, served.version if served else None)
    spec = PipelineSpec.model_validate(base.spec)
    swapped = _swap(list(spec.steps), found.name, pinned)
    steps = swapped if swapped is not None else [ModelStepSpec(model=pinned)]
    parsed, _ = pin_spec({"name": pipeline, "steps": [s.model_dump(mode="json") for s in steps]}, models.get_by_ref)
    return pinned, parsed.model_dump(mode="json")


_FIELD = {"field": "candidate"}


def _swap(steps: list[StepSpec], name: str, pinned: str) -> list[StepSpec] | None:
    """The steps with every model step of `name` (outside shadow challengers) running `pinned`; None if none is."""
    changed = False
    out: list[StepSpec] = []
    for step in steps:
        if isinstance(step, ModelStepSpec) and step.model.split(":")[0].split("@")[0] == name:
            out.append(ModelStepSpec(model=pinned))
            changed = True
        elif isinstance(step, SplitStepSpec):
            variants = []
            for variant in step.variants:
                inner = _swap(list(variant.steps), name, pinned)
                changed |= inner is not None
                variants.append(variant.model_copy(update={"steps": inner if inner is not None else variant.steps}))
            out.append(step.model_copy(update={"variants": variants}))
        elif isinstance(step, ShadowStepSpec):
            inner = _swap(list(step.champion), name, pinned)
            changed |= inner is not None
            out.append(step.model_copy(update={"champion": inner if inner is not None else step.champion}))
        else:
            out.append(step)
    return out if changed else None
