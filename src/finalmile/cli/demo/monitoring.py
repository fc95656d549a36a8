"""The demo's monitoring chapter: the challenger's traffic drifts, its accuracy drops, the monitors alert, and
finalmile routes all traffic back to the champion by itself; a chart and the CLI show what happened."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from rich.table import Table

from finalmile.cli.demo.state import FEATURES, MODEL
from finalmile.errors import MonitorNotFound

if TYPE_CHECKING:
    from finalmile.cli.demo.state import DemoState

PHASE_S = 2.0
"""Each phase of traffic lasts one monitor window; windows are seconds long so the demo runs in seconds too."""


def _folding(table: Table) -> Table:
    """Long monitor names wrap on a narrow terminal instead of being cut."""
    for column in table.columns:
        column.overflow = "fold"
    return table


MONITORS = ("challenger-amount-drift", "accuracy-by-variant", "high-risk-rate")


def step_monitor(state: DemoState) -> None:

    client = state.client
    for name in MONITORS:  # a demo run again on the same home starts its monitoring over
        with contextlib.suppress(MonitorNotFound):
            client.services.monitors.delete(name)
    state.monitor_start = datetime.now(UTC)
    route_back = [{"kind": "route", "variant": "champion", "cooldown_s": 600}]
    client.build_assay(
        "challenger-amount-drift",
        MODEL,
        "in_amount",
        baseline=state.train[FEATURES],
        window=PHASE_S,
        metric="psi",
        warning=0.1,
        alert=0.25,
        variant="challenger",
        actions=route_back,
    ).save(state.monitor_start)
    client.build_monitor(
        "accuracy-by-variant",
        MODEL,
        "performance",
        metric="accuracy",
        label="is_fraud",
        window=PHASE_S,
        warning=0.95,
        alert=0.9,
        group_by="variant",
    ).save(state.monitor_start)
    client.build_monitor("high-risk-rate", MODEL, "check_rate", column="high_risk", window=PHASE_S, alert=0.2).save(
        state.monitor_start
    )
    table = _folding(
        Table("monitor", "kind", "watches", "thresholds (warning / alert)", "action", title="Monitors saved")
    )
    for m in client.monitors(MODEL):
        c = m.config
        watches = f"{c.metric} of {c.column or c.label}" + (f", variant {c.variant}" if c.variant else "")
        actions = ", ".join(f"{a.kind} → {a.variant}" if a.kind == "route" else a.kind for a in c.actions) or "-"
        thresholds = " / ".join("-" if t is None else f"{t:g}" for t in (c.warning, c.alert))
        table.add_row(c.name, c.kind, watches, thresholds, actions)
    state.console.print(table)


def step_traffic(state: DemoState) -> None:
    """One window of ordinary traffic, then one in which amounts jump tenfold (a new merchant, a currency bug)."""

    pipeline = state.client.pipeline(MODEL)
    rows = state.test.reset_index(drop=True)
    served = {"ordinary": 0, "drifted": 0}
    for phase, end in (("ordinary", 1), ("drifted", 2)):
        deadline = state.monitor_start + timedelta(seconds=PHASE_S * end)
        i = 0
        while datetime.now(UTC) < deadline - timedelta(milliseconds=50) and i < len(rows):
            row = rows.iloc[[i]][FEATURES]
            if phase == "drifted":
                row = row.assign(amount=row.amount * 10, v1=row.v1 + 2.0)
            result = pipeline.infer_with_metadata(row)
            state.labels[result.request_id] = int(rows.is_fraud.iloc[i])
            served[phase] += 1
            i += 1
        time.sleep(max(0.0, (deadline - datetime.now(UTC)).total_seconds()) + 0.05)
    labels = pd.DataFrame({"request_id": list(state.labels), "is_fraud": list(state.labels.values())})
    pipeline.add_ground_truth(labels)
    state.console.print(
        f"Served {served['ordinary']} ordinary and {served['drifted']} drifted requests "
        "(amounts ×10, v1 + 2); their labels arrived afterwards."
    )


def step_act(state: DemoState) -> None:

    client = state.client
    before = client.services.pipelines.deployments()[0].version
    stored = client.run_monitors(state.monitor_start + timedelta(seconds=2 * PHASE_S))
    table = _folding(Table("monitor", "window", "group", "rows", "score", "status", title=f"{stored} monitor results"))
    colours = {"ok": "green", "warning": "yellow", "alert": "bold red", "no data": "dim"}
    for m in client.monitors(MODEL):
        for r in m.results().itertuples():
            window = f"{r.window_start:%H:%M:%S}–{r.window_end:%H:%M:%S}"
            score = "-" if r.score is None or np.isnan(r.score) else f"{r.score:.3f}"
            table.add_row(m.name, window, r.group or "", str(r.rows), score, f"[{colours[r.status]}]{r.status}[/]")
    state.console.print(table)
    for action in client.services.monitors.actions():
        outcome = f"{action['action']}: {action['outcome']} — {action['detail']}"
        state.console.print(f"[bold]{action['monitor']}[/] → {outcome}")
    after = client.services.pipelines.deployments()[0]
    spec = client.services.pipelines.get_version(MODEL, after.version).spec
    weights = ", ".join(f"{v['name']} {v['weight']:.0%}" for v in spec["steps"][0]["variants"])
    state.console.print(f"Pipeline {MODEL}: version {before} → {after.version} serving ({weights}).")
    pipeline = client.pipeline(MODEL)
    variants = {pipeline.infer_with_metadata(state.test.iloc[[i]][FEATURES]).routes[0][0] for i in range(50)}
    state.console.print(f"The next 50 requests went to: {', '.join(sorted(v or '-' for v in variants))}.")


def step_chart(state: DemoState) -> None:
    client = state.client
    path = client.settings.home / "charts" / "challenger-amount-drift.png"
    assay = client.monitor("challenger-amount-drift")
    results = assay.results()
    assay.chart(path, window=int(np.argmax(results.score.fillna(-1).to_numpy())))
    state.console.print(f"Chart of the drift and the baseline-vs-window histograms: [bold]{path}[/]")
    state.console.print(
        "From the command line: [bold]finalmile assays list[/], [bold]finalmile assays results "
        "challenger-amount-drift[/], [bold]finalmile alerts[/], [bold]finalmile assays chart challenger-amount-drift[/]"
    )
