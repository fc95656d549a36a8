"""Judging one step of a rollout: the candidate against the champion over the same window of the log.

Each gate is a monitor kind computed twice — once per arm, on the rows the split's version served since the step
began — so any kind (drift, check rates, performance against late labels) can gate. The arms are told apart by the
log's `variant` column, error rows included (an error raised inside an arm names it). A step ends in exactly one
decision: `advance` when every gate passes, `rollback` when any fails, `hold` when either arm has too few rows or a
gate's figure is missing or NaN — never a silent pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from finalmile.logs.query import utc
from finalmile.monitoring.baseline import baseline_values
from finalmile.monitoring.context import MonitorContext
from finalmile.monitoring.drift import histogram, psi, score_edges, shares
from finalmile.monitoring.kinds import kind_of
from finalmile.monitoring.kinds.base import run_sql, values
from finalmile.rollouts.plan import ARMS, Gate, RolloutPlan

Decision = Literal["advance", "hold", "rollback"]
LATENCY_SLACK_MS = 5.0
"""A p99 latency within 5 ms of the champion's passes whatever the ratio: a millisecond model's p99 over a few
hundred requests is one garbage collection or scheduler pause, in either arm."""


@dataclass
class Judgement:
    """A step's decision, why, and each gate's figures for both arms."""

    decision: Decision
    reason: str
    evidence: dict[str, Any] = field(default_factory=dict)


Window = tuple[list[str], list[Any]]
"""SQL conditions over the log `l` and their parameters: the rows one arm is judged on."""


def windows(pipeline: str, version: int, start: datetime, end: datetime, began: datetime, share: float
            ) -> dict[str, Window]:  # fmt: skip
    """Each arm's rows: what the step's version served in [start, end); at a 100% step the champion serves
    nothing, so its rows are those it served since the rollout `began`."""
    step: Window = (["l.pipeline = ?", "l.pipeline_version = ?", "l.time >= ?", "l.time < ?"],
                    [pipeline, version, utc(start), utc(end)])  # fmt: skip
    earlier: Window = (["l.pipeline = ?", "l.time >= ?", "l.time < ?"], [pipeline, utc(began), utc(end)])
    return {ARMS[0]: earlier if share >= 100 else step, ARMS[1]: step}


def judge(ctx: MonitorContext, arms: dict[str, Window], plan: RolloutPlan) -> Judgement:
    """The decision for the arms' rows (`windows`)."""
    arms = {arm: ([*where, "l.variant = ?"], [*params, arm]) for arm, (where, params) in arms.items()}
    rows = {
        arm: int(run_sql(ctx.reader, f"SELECT count(*) AS n FROM logs l WHERE {' AND '.join(w)}", p)[0][0].as_py())
        for arm, (w, p) in arms.items()
    }
    evidence: dict[str, Any] = {"rows": rows, "gates": []}
    short = [arm for arm in ARMS if rows[arm] < plan.min_rows]
    if short:
        said = ", ".join(f"{arm} {rows[arm]:,}" for arm in ARMS)
        return Judgement("hold", f"too few rows to judge: {said} (min_rows {plan.min_rows:,})", evidence)
    failed, missing = [], []
    for gate in plan.gates:
        figure = _figures(ctx, gate, arms)
        evidence["gates"].append(figure)
        if figure["passed"] is None:
            missing.append(f"{gate.name}: {figure['note']}")
        elif not figure["passed"]:
            failed.append(f"{gate.name}: {figure['note']}")
    if failed:
        return Judgement("rollback", "; ".join(failed), evidence)
    if missing:
        return Judgement("hold", "; ".join(missing), evidence)
    return Judgement("advance", "every gate passed", evidence)


def _figures(ctx: MonitorContext, gate: Gate, arms: dict[str, Window]) -> dict[str, Any]:
    """One gate's figure for each arm, the threshold, and whether the candidate passed (None: cannot say)."""
    config = gate.config()
    kind = kind_of(config)
    baseline = None if gate.against_champion or not kind.needs_baseline(config) else baseline_values(ctx, config)
    read = {arm: kind.read(ctx.reader, config, where, params, "", baseline) for arm, (where, params) in arms.items()}
    figures: dict[str, float | None] = {}
    if gate.against_champion:  # the champion's scores are the reference: only the candidate has a figure
        champion, candidate = (values(t, "value", np.arange(t.num_rows)).astype(np.float64) for t in read.values())
        figures["champion"] = 0.0 if len(champion) else None
        figures["candidate"] = score_psi(champion, candidate) if len(champion) and len(candidate) else None
    else:
        for arm, table in read.items():
            figures[arm] = kind.score(config, table, np.arange(table.num_rows), baseline)[0] if table.num_rows else None
    worse = kind.higher_is_worse(config)
    out: dict[str, Any] = {
        "gate": gate.name,
        "kind": config.kind,
        "champion": _plain(figures["champion"]),
        "candidate": _plain(figures["candidate"]),
        "margin": gate.margin,
        "relative": gate.relative,
        "limit": gate.limit,
        "higher_is_worse": worse,
    }
    champion, candidate = out["champion"], out["candidate"]
    if champion is None or candidate is None:
        return out | {"passed": None, "note": f"no figure (champion {champion}, candidate {candidate})"}
    gap = candidate - champion if worse else champion - candidate
    allowed = gate.margin * abs(champion) if gate.relative else gate.margin
    passed = gate.against_champion or gap <= allowed + 1e-12  # the score PSI is bounded by its limit alone
    if config.kind in ("latency_p99", "ttft_p99") and gap <= LATENCY_SLACK_MS:
        passed = True
    if gate.limit is not None and (candidate > gate.limit if worse else candidate < gate.limit):
        passed = False
    bound = f"within {gate.margin:g}{'×' if gate.relative else ''} of the champion"
    if gate.limit is not None:
        bound = (
            (f"{'at most' if worse else 'at least'} {gate.limit:g}")
            if gate.against_champion
            else (f"{bound}, {'at most' if worse else 'at least'} {gate.limit:g}")
        )
    note = f"champion {champion:.4g}, candidate {candidate:.4g} ({'passes' if passed else 'fails'}: {bound})"
    return out | {"passed": bool(passed), "note": note, "threshold": bound}


def score_psi(champion: np.ndarray, candidate: np.ndarray) -> float:
    """PSI of the candidate's scores against the champion's, binned as a replay bins them."""
    both = np.concatenate([champion, candidate])
    both = both[np.isfinite(both)]
    if not len(both):
        return float("nan")
    edges = score_edges(float(both.min()), float(both.max()), lambda at: np.nanquantile(champion, at))
    return psi(shares(histogram(champion, edges)), shares(histogram(candidate, edges)))


def _plain(value: float | None) -> float | None:
    """A figure as JSON holds it: NaN and infinities are missing figures."""
    return None if value is None or not math.isfinite(float(value)) else float(value)
