"""Serialisable pipeline definitions. A step spec is configuration only; `executor.py` turns it into something that
runs. Model references inside a stored pipeline version are always exact (`name:version`), never aliases.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, Discriminator, Field, Tag, ValidationError, model_validator

from finalmile.config import read_yaml
from finalmile.errors import InvalidCheckError, PipelineDefinitionError
from finalmile.pipelines.checks import compile_check


class ModelStepSpec(BaseModel):
    """A step that runs a model version."""

    model_config = {"extra": "forbid"}

    kind: Literal["model"] = "model"
    model: str
    """`name`, `name:version` or `name@alias` when building; always `name:version` once a version is created."""


class CheckStepSpec(BaseModel):
    """A named rule that flags rows without failing them."""

    model_config = {"extra": "forbid"}

    kind: Literal["check"] = "check"
    name: str
    expression: str
    """A rule over inputs (`in.amount`) and the outputs so far (`out.score`), e.g. `out.score > 0.95`."""


class GuardrailStepSpec(BaseModel):
    """Text rules over a generated column (`pipelines/guardrails.py`): flag, redact or refuse before the answer
    leaves; its flags are logged as the check `name`."""

    model_config = {"extra": "forbid"}

    kind: Literal["guardrail"] = "guardrail"
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    column: str = "completion"
    patterns: list[str] = Field(default_factory=list)
    """Regular expressions (RE2 syntax)."""
    blocked_words: list[str] = Field(default_factory=list)
    pii: list[Literal["email", "card", "phone"]] = Field(default_factory=list)
    action: Literal["flag", "redact", "refuse"] = "flag"
    refusal: str = "I can't help with that."
    """The text a refused row answers with."""

    @model_validator(mode="after")
    def _rules(self) -> GuardrailStepSpec:
        self.compiled()  # a bad pattern is refused with the definition, never while serving
        return self

    def compiled(self) -> list[str]:
        from finalmile.pipelines.guardrails import rules

        return rules(self.patterns, self.blocked_words, list(self.pii))


class VariantSpec(BaseModel):
    """One arm of an A/B split: its share of traffic and its steps."""

    model_config = {"extra": "forbid"}

    name: str
    weight: float = Field(ge=0, le=1e6, allow_inf_nan=False)
    steps: list[StepSpec]


class SplitStepSpec(BaseModel):
    """An A/B split: each row goes to one variant, by weight or by a hashed key."""

    model_config = {"extra": "forbid"}

    kind: Literal["split"] = "split"
    variants: list[VariantSpec] = Field(min_length=1)
    key: str | None = None
    """An input column hashed so the same key always gets the same variant; random by weight when unset."""

    @model_validator(mode="after")
    def _weights(self) -> SplitStepSpec:
        if sum(v.weight for v in self.variants) <= 0:
            raise ValueError("split weights must add up to more than 0")
        if len({v.name for v in self.variants}) != len(self.variants):
            raise ValueError("split variant names must be distinct")
        return self


class ShadowStepSpec(BaseModel):
    """The champion answers; challengers see the same rows and write only to the log."""

    model_config = {"extra": "forbid"}

    kind: Literal["shadow"] = "shadow"
    champion: list[StepSpec] = Field(min_length=1)
    challengers: dict[str, list[StepSpec]] = Field(min_length=1)


def _kind(value: Any) -> str:
    # A step written without `kind` is a model step: `- model: fraud@champion` reads naturally in YAML.
    return str(value.get("kind", "model")) if isinstance(value, dict) else str(value.kind)


StepSpec = Annotated[
    Annotated[ModelStepSpec, Tag("model")]
    | Annotated[CheckStepSpec, Tag("check")]
    | Annotated[GuardrailStepSpec, Tag("guardrail")]
    | Annotated[SplitStepSpec, Tag("split")]
    | Annotated[ShadowStepSpec, Tag("shadow")],
    Discriminator(_kind),
]
VariantSpec.model_rebuild()
SplitStepSpec.model_rebuild()
ShadowStepSpec.model_rebuild()


class PipelineSpec(BaseModel):
    """A whole pipeline definition, as YAML or a dict; stored versions pin exact model versions."""

    model_config = {"extra": "forbid"}

    name: str
    steps: list[StepSpec] = Field(min_length=1)

    @classmethod
    def from_dict(cls, data: Any) -> PipelineSpec:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise PipelineDefinitionError(
                "invalid pipeline definition: " + "; ".join(problems), {"problems": problems}
            ) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> PipelineSpec:
        return cls.read(path)[0]

    @classmethod
    def read(cls, definition: str | Path | dict[str, Any]) -> tuple[PipelineSpec, dict[str, Any] | None]:
        """A definition (YAML path or dict) and its optional `deployment:` section (how `--deploy` deploys it:
        batching, `backend: ray`, replicas); the section is not part of the version."""
        if isinstance(definition, dict):
            data: Any = dict(definition)
        else:
            data = read_yaml(definition, PipelineDefinitionError)
        deployment = data.pop("deployment", None) if isinstance(data, dict) else None
        if deployment is not None and not isinstance(deployment, dict):
            raise PipelineDefinitionError("deployment: must be a mapping of settings", {"field": "deployment"})
        return cls.from_dict(data), deployment


def walk(steps: list[Any]) -> list[Any]:
    """Every step, nested ones included (split variants, shadow champion and challengers)."""
    found: list[Any] = []
    for step in steps:
        found.append(step)
        if isinstance(step, SplitStepSpec):
            for variant in step.variants:
                found.extend(walk(variant.steps))
        elif isinstance(step, ShadowStepSpec):
            found.extend(walk(step.champion))
            for challenger in step.challengers.values():
                found.extend(walk(challenger))
    return found


def pinned_models(spec: dict[str, Any]) -> list[str]:
    """The model versions a stored definition pins (`name:version`), in step order, each once."""
    steps = PipelineSpec.model_validate(spec).steps
    return list(dict.fromkeys(s.model for s in walk(list(steps)) if isinstance(s, ModelStepSpec)))


class _Version(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def schema(self) -> dict[str, Any]: ...


def pin_spec(spec: dict[str, Any], resolve: Callable[[str], _Version]) -> tuple[PipelineSpec, list[tuple[str, int]]]:
    """A definition with every model reference pinned to `name:version` (aliases resolved now), and the pins;
    check expressions are compiled, so a malformed rule is refused now rather than while serving."""
    parsed = PipelineSpec.from_dict(spec)
    refs = []
    outputs: set[str] = set()
    for step in walk(list(parsed.steps)):
        if isinstance(step, ModelStepSpec):
            found = resolve(step.model)
            step.model = f"{found.name}:{found.version}"
            refs.append((found.name, found.version))
            outputs |= {c["name"] for c in found.schema.get("outputs", [])}
    for step in walk(list(parsed.steps)):
        if isinstance(step, CheckStepSpec):
            missing = sorted(compile_check(step.expression)[2] - outputs)
            if missing and outputs:  # a model that declares no outputs cannot be checked against
                raise InvalidCheckError(
                    f"check '{step.name}': no model of the pipeline outputs {', '.join(missing)} "
                    f"(outputs: {', '.join(sorted(outputs))})",
                    {"field": "expression", "check": step.name},
                )
    return parsed, refs
