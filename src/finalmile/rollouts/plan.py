"""A rollout's plan: the traffic steps, how long each lasts, the gates that judge it, what long holds do — checked
when the rollout is asked for (a 4xx naming the field), stored as JSON, never re-checked while it runs."""

from __future__ import annotations

from typing import Any, Literal

from pyarrow import ArrowException
from pydantic import BaseModel, Field, ValidationError

from finalmile.config import parse_duration
from finalmile.errors import FinalmileError, InvalidInputError
from finalmile.monitoring.baseline import store_matrix
from finalmile.monitoring.build import build_config, logged_columns
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.kinds import KINDS
from finalmile.rollouts.replay import SCORE_NAMES

ARMS = ("champion", "candidate")
"""The split's two variants, as the log names them."""
SCORE_PSI = "score_psi"
"""The gate that compares the arms' score distributions with each other (PSI, the champion's scores as reference)."""
MARGINS = {
    "error_rate": 0.01, "latency_p99": 0.25, "performance": 0.02, "check_rate": 0.02, "drift": 0.1,
    "ttft_p99": 0.25, "tokens_per_s": 0.25,
}  # fmt: skip
RELATIVE = frozenset({"latency_p99", "ttft_p99", "tokens_per_s"})
"""How much worse than the champion the candidate may be: absolute, but relative (a fraction) for the figures of
speed (p99 latency, time to first token, tokens/s)."""
DEFAULT_MARGIN = 0.05
SCORE_PSI_LIMIT = 0.2
"""PSI above 0.2 is the usual reading of "the distribution moved"."""
DEFAULT_GATES = ("error_rate", "latency_p99", SCORE_PSI)


class Gate(BaseModel):
    """One gate: a monitor kind computed for both arms over the same window, and how far the candidate may trail."""

    model_config = {"extra": "forbid"}

    name: str
    monitor: dict[str, Any]
    """The `MonitorConfig` computed per arm (its `variant` set to each in turn)."""
    margin: float = Field(ge=0, allow_inf_nan=False)
    relative: bool = False
    """`margin` as a fraction of the champion's figure (latency), not an absolute difference."""
    limit: float | None = None
    """A bound on the candidate's own figure besides the comparison (the score PSI's 0.2)."""
    against_champion: bool = False
    """The champion's values in the window are the baseline (the score PSI), so only the candidate has a figure."""

    def config(self) -> MonitorConfig:
        return MonitorConfig.model_validate(self.monitor)


class RolloutPlan(BaseModel):
    """What a rollout does, as stored."""

    model_config = {"extra": "forbid"}

    steps: list[float]
    """The candidate's share of traffic at each step, in percent, increasing; promoted after the last."""
    step_every_s: float
    min_rows: int = Field(ge=1)
    """Fewer rows than this in either arm over a step's window holds the step."""
    key: str | None = None
    """An input column hashed so one customer stays on one arm; random per request when unset."""
    gates: list[Gate]
    hold_alert_after: int = Field(ge=1)
    """Consecutive holds at one step after which the rollout alerts and does `on_hold`."""
    on_hold: Literal["pause", "abort", "wait"] = "pause"
    alias: str | None = "champion"
    """Moved to the candidate's model version on promotion (None: no alias moves)."""


def build_plan(
    ctx: MonitorContext,
    pipeline: str,
    steps: Any,
    step_every: Any,
    gates: Any,
    min_rows: Any,
    key: str | None,
    hold_alert_after: Any,
    on_hold: Any,
    alias: str | None,
) -> RolloutPlan:
    """A checked plan; every problem a 4xx that names its field."""
    if not isinstance(steps, (list, tuple)) or not steps:
        raise InvalidInputError(
            "steps: give the candidate's traffic share at each step, e.g. [5, 25, 50, 100]", _f("steps")
        )
    shares: list[float] = []
    for i, share in enumerate(steps):
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 100:
            raise InvalidInputError(f"steps[{i}]: {share!r} is not a percentage in (0, 100]", _f("steps"))
        if shares and share <= shares[-1]:
            raise InvalidInputError(f"steps: must increase, but {share:g} follows {shares[-1]:g}", _f("steps"))
        shares.append(float(share))
    seconds = parse_duration(step_every, "step_every")
    if seconds <= 0:
        raise InvalidInputError("step_every: must be longer than 0", _f("step_every"))
    try:
        return RolloutPlan(
            steps=shares,
            step_every_s=seconds,
            min_rows=min_rows,
            key=key,
            gates=build_gates(ctx, pipeline, gates),
            hold_alert_after=hold_alert_after,
            on_hold=on_hold,
            alias=alias,
        )
    except ValidationError as exc:
        found = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError("; ".join(found), {"field": str(exc.errors()[0]["loc"][0])}) from None


def build_gates(ctx: MonitorContext, pipeline: str, gates: Any) -> list[Gate]:
    """Gates from names (`"error_rate"`) or dicts (`{"kind": "drift", "column": "in_amount", "margin": 0.1,
    "baseline": "fraud:1"}`: any monitor kind with its fields, plus `margin` and `limit`); the defaults when None."""
    given = list(DEFAULT_GATES) if gates is None else gates
    if not isinstance(given, (list, tuple)):
        raise InvalidInputError("gates: give a list of gate names or definitions", _f("gates"))
    built = []
    for i, gate in enumerate(given):
        spec = {"kind": gate} if isinstance(gate, str) else dict(gate) if isinstance(gate, dict) else None
        if spec is None or not isinstance(spec.get("kind"), str):
            raise InvalidInputError(f"gates[{i}]: a gate is a name or a mapping with a `kind`", _f("gates"))
        kind = spec["kind"]
        try:
            made = _gate(ctx, pipeline, spec, i)
        except FinalmileError as exc:
            if gates is None and kind == SCORE_PSI:  # a default: skipped where there is no score to compare
                continue
            raise InvalidInputError(f"gates[{i}] ({kind}): {exc.message}", _f("gates")) from None
        built.append(made)
    if not built:
        raise InvalidInputError("gates: a rollout needs at least one gate", _f("gates"))
    return built


def _gate(ctx: MonitorContext, pipeline: str, spec: dict[str, Any], i: int) -> Gate:
    kind = spec.pop("kind")
    margin, limit = spec.pop("margin", None), spec.pop("limit", None)
    for name, value in (("margin", margin), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise InvalidInputError(f"{name}: {value!r} is not a number")
    if kind == SCORE_PSI:
        logged = logged_columns(ctx, pipeline)
        column = spec.pop("column", None) or _score_column(logged)
        if spec:
            raise InvalidInputError(f"unexpected field(s) {', '.join(sorted(spec))} (score_psi takes column, limit)")
        column = column if column in logged else f"out_{column}"
        if column not in logged:
            raise InvalidInputError(f"column: pipeline '{pipeline}' logs no '{column.removeprefix('out_')}'")
        config = MonitorConfig(name=f"gate-{i}", pipeline=pipeline, kind="drift", column=column, metric="psi")
        return Gate(
            name=f"score PSI ({column})",
            monitor=config.model_dump(mode="json"),
            margin=0.0,
            limit=SCORE_PSI_LIMIT if limit is None else float(limit),
            against_champion=True,
        )
    if kind not in KINDS:
        raise InvalidInputError(f"unknown gate; gates are {', '.join([SCORE_PSI, *KINDS])}")
    fixed = sorted({"name", "pipeline", "actions"} & set(spec))
    if fixed:
        raise InvalidInputError(f"{', '.join(fixed)}: a gate is judged on the rollout's pipeline and takes no action")
    try:
        config, values = build_config(ctx, name=f"gate-{i}", pipeline=pipeline, kind=kind, **spec)
    except (ValueError, TypeError, OverflowError, ArrowException) as exc:  # values no monitor can be built from
        raise InvalidInputError(f"invalid gate: {exc}") from None
    store_matrix(ctx.artifacts, config, values)  # the gate is judged later, from the stored reference
    return Gate(
        name=kind
        + (f" ({config.column})" if config.column else "")
        + (f" {config.metric}" if kind == "performance" else ""),
        monitor=config.model_dump(mode="json"),
        margin=float(MARGINS.get(kind, DEFAULT_MARGIN) if margin is None else margin),
        relative=kind in RELATIVE,
        limit=None if limit is None else float(limit),
    )


def _score_column(logged: set[str]) -> str:
    # A generative pipeline's answers are compared by their length (`tokens_out`) where there is no score.
    found = next((f"out_{n}" for n in (*SCORE_NAMES, "tokens_out") if f"out_{n}" in logged), None)
    if found is None:
        raise InvalidInputError("column: no score output to compare (name one: {'kind': 'score_psi', 'column': …})")
    return found


def _f(field: str) -> dict[str, str]:
    return {"field": field}
