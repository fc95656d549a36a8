"""The pages people read: overview, pipeline, models, monitors and alerts, each from the stores and the log views.

Each page's figures are gathered by one function off the event loop (DuckDB and the stores block), then rendered.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

import finalmile.dashboard.queries as queries
from finalmile.dashboard.guard import PageGuards, Visitor
from finalmile.dashboard.render import render
from finalmile.errors import FinalmileError, NotFoundError
from finalmile.monitoring.chart import bin_labels
from finalmile.monitoring.runs import results_frame
from finalmile.pipelines.spec import PipelineSpec, SplitStepSpec, pinned_models, walk
from finalmile.runtimes.explain import EXPLAINED
from finalmile.runtimes.selection import fastest
from finalmile.schema import Schema
from finalmile.services import Services


async def page(template: str, visitor: Visitor, fn: Any, *args: Any) -> HTMLResponse:
    """Gather a page's figures off the event loop and render them; an error is a page that says what went wrong."""
    try:
        data = await asyncio.get_running_loop().run_in_executor(None, fn, *args)
    except FinalmileError as exc:
        return render("error.html", visitor, status=exc.status_code, message=exc.message)
    return render(template, visitor, **data)


def overview(services: Services, now: datetime) -> dict[str, Any]:
    with services.reader.connection() as conn:
        traffic = queries.traffic(conn, now)
    pipeline_of = {m.config.name: m.config.pipeline for m in services.monitors.all()}
    open_alerts: dict[str, int] = {}
    for alert in services.monitors.alerts():
        if alert.open and alert.monitor in pipeline_of:
            open_alerts[pipeline_of[alert.monitor]] = open_alerts.get(pipeline_of[alert.monitor], 0) + 1
    counts = services.metrics.request_counts()
    deployed = services.pipelines.deployments()
    rows = []
    for d in deployed:
        total, failed = counts.get(d.name, (0, 0))
        rows.append(
            {
                "name": d.name,
                "version": d.version,
                "serving": services.dataplane.ready(d.name, d.version),
                "traffic": traffic.get(d.name) or queries.Traffic(spark=[0] * len(queries.bucket_starts(now))),
                "alerts": open_alerts.get(d.name, 0),
                "error_rate": failed / total if total else None,
                "requests_seen": total,
            }
        )
    names = {d.name for d in deployed}
    idle = [n for n in services.pipelines.list_pipelines() if n not in names]
    return {"pipelines": rows, "idle": idle, "buckets": queries.bucket_starts(now), "bucket_s": queries.BUCKET_S}


def describe_steps(steps: list[Any]) -> list[dict[str, Any]]:
    """A spec's steps as nested dicts the template draws as a tree."""
    out: list[dict[str, Any]] = []
    for step in steps:
        kind = step["kind"]
        if kind == "model":
            out.append({"kind": "model", "model": step["model"]})
        elif kind == "check":
            out.append({"kind": "check", "name": step["name"], "expression": step["expression"]})
        elif kind == "guardrail":
            rules = [*step.get("pii", []), *step.get("blocked_words", []), *step.get("patterns", [])]
            fields = {k: step.get(k) for k in ("name", "action", "column")}
            out.append({"kind": "guardrail", "rules": rules} | fields)
        elif kind == "split":
            variants = [
                {"name": v["name"], "weight": v["weight"], "steps": describe_steps(v["steps"])}
                for v in step["variants"]
            ]
            out.append({"kind": "split", "key": step.get("key"), "variants": variants})
        elif kind == "shadow":
            challengers = {k: describe_steps(v) for k, v in step["challengers"].items()}
            out.append({"kind": "shadow", "champion": describe_steps(step["champion"]), "challengers": challengers})
        else:
            out.append({"kind": kind, "detail": {k: v for k, v in step.items() if k != "kind"}})
    return out


def pipeline_page(services: Services, name: str, now: datetime) -> dict[str, Any]:
    versions = services.pipelines.list_versions(name)
    if not versions:
        raise NotFoundError(f"no pipeline named {name!r}", {"name": name})
    deployment = services.pipelines.deployment(name)
    shown = next((v for v in versions if deployment and v.version == deployment.version), versions[-1])
    spec = PipelineSpec.model_validate(shown.spec)
    split_variants = [v.name for s in walk(list(spec.steps)) if isinstance(s, SplitStepSpec) for v in s.variants]
    trail = [e for e in services.audit.entries(f"pipeline {name}") if e.target == f"pipeline {name}"]
    with services.reader.connection() as conn:
        figures = queries.pipeline_figures(conn, services.reader, name, now)
    return {
        "name": name,
        "versions": list(reversed(versions)),
        "deployment": deployment,
        "serving": bool(deployment) and services.dataplane.ready(name, deployment.version),  # type: ignore[union-attr]
        "shown": shown,
        "steps": describe_steps(shown.spec["steps"]),
        "split_variants": split_variants,
        "trail": list(reversed(trail)),
        "pinned": {v.version: pinned_models(v.spec) for v in versions},
        "figures": figures,
        "buckets": queries.bucket_starts(now),
        "replays": list(reversed(services.replays.all(name))),
        "rollouts": list(reversed(services.rollouts.all(name))),
    }


def replay_page(services: Services, replay_id: int) -> dict[str, Any]:
    """A replay as a product manager reads it: the two score histograms, agreement, the rows that differ most."""
    record = services.replays.get(replay_id)
    summary = record.summary or {}
    histogram = summary.get("histogram") or {}
    edges = histogram.get("edges") or []
    return {
        "replay": record,
        "summary": summary,
        "histogram": {
            "labels": [f"{edges[i]:.3g}–{edges[i + 1]:.3g}" for i in range(len(edges) - 1)],
            "series": {"served": histogram.get("served", []), "candidate": histogram.get("candidate", [])},
            "y_label": "rows",
            "x_label": summary.get("score") or "score",
        },
        "rows": services.replay_rows(replay_id, 20).to_pylist(),
    }


def rollout_page(services: Services, rollout_id: int) -> dict[str, Any]:
    """A rollout as people follow it: where it is, its timeline, each gate's figures for both arms at every step."""
    record = services.rollouts.get(rollout_id)
    judged = [e for e in record.events if e.evidence.get("gates")]
    labels = [f"step {e.step + 1} #{(e.attempt or 0) + 1}" for e in judged]
    gates: dict[str, dict[str, Any]] = {}
    for i, event in enumerate(judged):
        for g in event.evidence["gates"]:
            empty = {"champion": [None] * len(judged), "candidate": [None] * len(judged)}
            chart = gates.setdefault(g["gate"], {"labels": labels, "series": empty, "x_label": "evaluation"})
            chart["y_label"] = g["gate"]
            chart["series"]["champion"][i], chart["series"]["candidate"][i] = g["champion"], g["candidate"]
    traffic = {
        "labels": [f"{e.at:%H:%M:%S} {e.decision}" for e in record.events],
        "series": {"candidate": [e.weight for e in record.events]},
        "x_label": "transition (UTC)",
        "y_label": "candidate's share of traffic (%)",
    }
    return {"rollout": record, "events": list(reversed(record.events)), "gates": gates, "traffic": traffic}


SHOWN_ROWS = 5
"""Rows of a request explained on its page (a request of thousands of rows is a file's, not a person's)."""


def explanation_page(services: Services, name: str, request_id: str) -> dict[str, Any]:
    """A logged request's rows as a product manager reads them: each feature's push up or down from the base value."""
    table = services.explain(name, request_id)
    fixed = {"request_id", "row", "model", "base_value", "value"}
    features = [c for c in table.column_names if c not in fixed]
    explains = (table.schema.metadata or {}).get(EXPLAINED, b"value").decode()
    rows = []
    for row in table.slice(0, SHOWN_ROWS).to_pylist():
        ranked = sorted(features, key=lambda f: -abs(row[f]))
        chart = {"labels": ranked, "series": {"contribution": [row[f] for f in ranked]}, "x_label": "feature",
                 "y_label": f"contribution to the {explains}"}  # fmt: skip
        rows.append({"row": row, "chart": chart, "ranked": ranked})
    return {"name": name, "request_id": request_id, "rows": rows, "explains": explains, "total": table.num_rows}


def models_page(services: Services) -> dict[str, Any]:
    return {"models": services.metadata.list_models()}


def model_page(services: Services, name: str) -> dict[str, Any]:
    versions = services.metadata.list_versions(name)
    fastest_at = {}
    for v in versions:
        timings = (v.conversion or {}).get("timings_us") or {}
        sizes = list(next(iter(timings.values()))) if timings else []
        fastest_at[v.version] = {size: fastest(timings, int(size)) for size in sizes}
    return {
        "name": name,
        "versions": [(v, Schema.model_validate(v.schema)) for v in reversed(versions)],
        "fastest": fastest_at,
    }


def monitors_page(services: Services) -> dict[str, Any]:
    saved = services.monitors.all()
    latest = {}
    for m in saved:
        results = services.monitors.results(m.config.name)
        latest[m.config.name] = results[-1] if results else None
    alerts = list(reversed(services.monitors.alerts()))
    return {"monitors": saved, "latest": latest, "alerts": alerts, "actions": services.monitors.actions()}


def monitor_page(services: Services, name: str, window: int | None) -> dict[str, Any]:
    saved = services.monitors.get(name)
    frame = results_frame(services.monitors.results(name))
    chart: dict[str, Any] = {"series": {}, "warning": saved.config.warning, "alert": saved.config.alert}
    for group, rows in frame.groupby("group", sort=True) if not frame.empty else []:
        chart["series"][group or saved.config.metric] = {
            "t": [int(t.timestamp()) for t in rows["window_end"]],
            "y": [None if s is None or s != s else float(s) for s in rows["score"]],
            "status": list(rows["status"]),
        }
    realised = [(int(r.window_end.timestamp()), (r.evidence or {}).get("realised")) for r in frame.itertuples()]
    if any(value is not None for _, value in realised):  # an estimate's windows whose labels have come
        known = [(t, v) for t, v in realised if v is not None]
        chart["series"]["realised (labels)"] = {"t": [t for t, _ in known], "y": [v for _, v in known],
                                               "status": ["ok"] * len(known)}  # fmt: skip
    chosen = None
    if not frame.empty:
        with_rows = [i for i, rows in enumerate(frame["rows"]) if rows]  # by default, the last window with data
        latest = with_rows[-1] if with_rows else len(frame) - 1
        index = latest if window is None else max(0, min(window, len(frame) - 1))
        chosen = {"index": index, **frame.iloc[index].to_dict()}
        edges = chosen["evidence"].get("edges")
        chosen["bin_labels"] = bin_labels(edges) if edges else []
    alerts = [a for a in reversed(services.monitors.alerts(name))]
    return {
        "monitor": saved,
        "chart": chart,
        "results": frame.to_dict("records")[::-1],
        "count": len(frame),
        "chosen": chosen,
        "alerts": alerts,
        "actions": list(reversed(services.monitors.actions(name))),
    }


def router(guards: PageGuards) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    @pages.get("/ui")
    async def overview_route(request: Request, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        fragment = request.headers.get("hx-request") == "true"  # the table refreshing itself
        template = "_overview_table.html" if fragment else "overview.html"
        return await page(template, visitor, overview, visitor.services, datetime.now(UTC))

    @pages.get("/ui/pipelines/{name}")
    async def pipeline_route(name: str, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("pipeline.html", visitor, pipeline_page, visitor.services, name, datetime.now(UTC))

    @pages.get("/ui/models")
    async def models_route(visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("models.html", visitor, models_page, visitor.services)

    @pages.get("/ui/models/{name}")
    async def model_route(name: str, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("model.html", visitor, model_page, visitor.services, name)

    @pages.get("/ui/monitors")
    async def monitors_route(visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("monitors.html", visitor, monitors_page, visitor.services)

    @pages.get("/ui/monitors/{name}")
    async def monitor_route(
        name: str,
        window: int | None = Query(None, ge=0, le=1_000_000, description="which window's histograms"),
        visitor: Visitor = Depends(guards.read),
    ) -> HTMLResponse:
        return await page("monitor.html", visitor, monitor_page, visitor.services, name, window)

    @pages.get("/ui/replays/{replay_id}")
    async def replay_route(replay_id: int, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("replay.html", visitor, replay_page, visitor.services, replay_id)

    @pages.get("/ui/pipelines/{name}/explain/{request_id}")
    async def explanation_route(name: str, request_id: str, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("explanation.html", visitor, explanation_page, visitor.services, name, request_id)

    @pages.get("/ui/rollouts/{rollout_id}")
    async def rollout_route(rollout_id: int, visitor: Visitor = Depends(guards.read)) -> HTMLResponse:
        return await page("rollout.html", visitor, rollout_page, visitor.services, rollout_id)

    return pages
