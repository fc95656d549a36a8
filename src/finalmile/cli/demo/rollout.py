"""The demo's last chapter: a retrained model earns its traffic step by step and is promoted; one whose scores
shift is rolled back at its first step."""

from __future__ import annotations

import time

from rich.table import Table

from finalmile.cli.demo.state import FEATURES, MODEL, DemoState
from finalmile.rollouts.rollout_store import RolloutRecord

STEP_S = 1.0
"""Each step's length here; a real rollout's steps last minutes or hours (`step_every="10m"`)."""


def step_rollout(state: DemoState) -> None:
    """The champion serves alone again; a forest retrained on more data comes in at 25%, 50%, then 100%."""
    from sklearn.ensemble import RandomForestClassifier

    client = state.client
    pipeline = (
        client.build_pipeline(MODEL).add_model_step(f"{MODEL}@champion").add_check("high_risk", "out.score > 0.9")
    )
    pipeline.deploy(max_batch_size=64, max_delay_ms=1)
    X, y = state.train[FEATURES], state.train["is_fraud"]
    with state.console.status("Retraining the forest with 200 trees…"):
        retrained = RandomForestClassifier(n_estimators=200, max_depth=8, n_jobs=1, random_state=1).fit(X, y)
    candidate = client.upload_model(MODEL, retrained, sample=X.head(500), tags={"demo": "true"})
    rollout = pipeline.rollout(candidate.ref, steps=[25, 50, 100], step_every=STEP_S, min_rows=300)
    state.console.print(f"Rollout {rollout.id}: {candidate.ref} serves {rollout.weight:g}% beside the champion.")
    rollout = _until_decided(state, rollout, 150)
    state.console.print(
        f"{MODEL}@champion is now {client.model(f'{MODEL}@champion').ref}; the earlier champion stays registered "
        f"(one call brings it back: [bold]finalmile rollouts control {rollout.id} rollback[/])."
    )


def step_bad_rollout(state: DemoState) -> None:
    """A model trained with its label inverted (a bug in a feature pipeline): its scores look nothing like the
    champion's, so it never gets past its first step."""
    from sklearn.ensemble import RandomForestClassifier

    client = state.client
    X, y = state.train[FEATURES], state.train["is_fraud"]
    inverted = RandomForestClassifier(n_estimators=50, max_depth=8, n_jobs=1, random_state=2).fit(X, 1 - y)
    bad = client.upload_model(MODEL, inverted, sample=X.head(500), tags={"demo": "true"})
    rollout = client.pipeline(MODEL).rollout(bad.ref, steps=[20, 50, 100], step_every=STEP_S, min_rows=100)
    rollout = _until_decided(state, rollout, 200)
    serving = client.services.pipelines.deployment(MODEL)
    state.console.print(f"Version {serving.version if serving else '-'} serves the champion alone again.")


def _until_decided(state: DemoState, rollout: RolloutRecord, requests: int) -> RolloutRecord:
    """Serve each step's traffic, let the step end, judge it (what `finalmile serve` does by itself), until the
    rollout is promoted or rolled back; its timeline shown."""
    while rollout.state == "running":
        _serve(state, requests)
        time.sleep(STEP_S)
        state.client.run_rollouts()
        rollout = state.client.rollout_run(rollout.id)
    _timeline(state, rollout)
    return rollout


def _serve(state: DemoState, requests: int) -> None:
    pipeline = state.client.pipeline(MODEL)
    rows = state.test[FEATURES]
    for _ in range(requests):
        at = int(state.rng.integers(0, len(rows) - 4))
        pipeline.infer(rows.iloc[at : at + 4])


def _timeline(state: DemoState, rollout: RolloutRecord) -> None:
    table = Table("step", "decision", "traffic after", "why", title=f"Rollout {rollout.id} of {rollout.candidate}")
    for e in rollout.events:
        table.add_row(str(e.step + 1), e.decision, f"{e.weight:g}%", e.reason)
    state.console.print(table)
