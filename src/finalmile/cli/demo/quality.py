"""The demo's quality chapter: the accuracy estimated from scores alone, window by window, beside the accuracy the
labels showed later; and one drifted request explained, feature by feature."""

from __future__ import annotations

from datetime import timedelta

from rich.table import Table

from finalmile.cli.demo.monitoring import PHASE_S
from finalmile.cli.demo.state import FEATURES, MODEL, DemoState


def step_estimate(state: DemoState) -> None:
    """Calibrated on a labelled validation set, the scores of each window say what its accuracy will turn out to be."""
    client = state.client
    validation = state.train.iloc[-3000:]
    monitor = client.build_monitor(
        "estimated-accuracy", MODEL, "estimated_performance", metric="accuracy", label="is_fraud",
        reference=validation[[*FEATURES, "is_fraud"]], window=PHASE_S,
    )  # fmt: skip
    results = monitor.preview(state.monitor_start, state.monitor_start + timedelta(seconds=2 * PHASE_S))
    table = Table("window", "rows", "estimated accuracy (3σ band)", "realised (labels, later)",
                  title="Accuracy estimated from the scores alone")  # fmt: skip
    for phase, r in zip(("ordinary", "drifted"), results.itertuples(), strict=False):
        e = r.evidence
        realised = e.get("realised")
        table.add_row(
            phase, str(r.rows), f"{r.score:.3f} ({e['lower']:.3f}–{e['upper']:.3f})",
            "-" if realised is None else f"{realised:.3f} on {e['labelled']} labels",
        )  # fmt: skip
    state.console.print(table)
    path = client.settings.home / "charts" / "estimated-accuracy.png"
    monitor.chart(path, results=results)
    state.console.print(f"The estimate fell with the drift before any label came; chart: {path}")


def step_explain(state: DemoState) -> None:
    """Why one drifted request was scored as it was: the features that pushed its fraud score, largest first."""
    client = state.client
    found = client.query(
        f"SELECT request_id FROM logs WHERE pipeline = '{MODEL}' AND status = 'ok' AND in_amount > 1000 "
        "ORDER BY out_score DESC LIMIT 1"
    )
    if found.empty:
        state.console.print("No drifted request to explain.")
        return
    explained = client.explain(MODEL, str(found.request_id.iloc[0]))
    row = explained.iloc[0]
    ranked = sorted(FEATURES, key=lambda f: -abs(row[f]))[:5]
    state.console.print(
        f"Why request {row.request_id} ({row.model}): its output {row.value:.3f} is the base value "
        f"{row.base_value:.3f} plus each feature's contribution (the five largest below)",
        soft_wrap=True,
    )
    table = Table("feature", "contribution")
    for feature in ranked:
        table.add_row(feature, f"{row[feature]:+.4f}")
    state.console.print(table)
    state.console.print(f"The dashboard draws it as bars: /ui/pipelines/{MODEL}/explain/{row.request_id}")
