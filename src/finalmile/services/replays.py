"""Replay verbs: a pipeline's logged traffic through a candidate, stored with its summary and per-row results."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.errors import FinalmileError
from finalmile.logs.query import LogReader
from finalmile.pipelines.loaded import load_pipeline
from finalmile.pipelines.store import PipelineStore, PipelineVersionRecord
from finalmile.registry.loader import RuntimeLoader
from finalmile.registry.store import MetadataStore, utc_now
from finalmile.rollouts.candidate import resolve_candidate
from finalmile.rollouts.replay import BATCH_ROWS, plan_replay, replay_rows
from finalmile.rollouts.store import ReplayRecord, ReplayStore
from finalmile.services.acting import Acting


class ReplayVerbs(Acting):
    """Mixed into `Services`."""

    metadata: MetadataStore
    pipelines: PipelineStore
    loader: RuntimeLoader
    reader: LogReader
    replays: ReplayStore

    def replay(
        self,
        pipeline: str,
        candidate: Any,
        start: Any = None,
        end: Any = None,
        sample: float | None = None,
        seed: int = 0,
        segment_by: str | None = None,
        label: str | None = None,
        progress: bool = False,
        actor: str | None = None,
    ) -> ReplayRecord:
        """Run `pipeline`'s logged inputs from `start` to `end` (a `sample` of them, drawn by `seed`) through
        `candidate` and compare with what was served; stored, with its rows as Parquet for drill-down."""
        self.pipelines.get_version(pipeline)  # an unknown pipeline is a 404 before anything else
        described, spec = resolve_candidate(self.pipelines, self.metadata, pipeline, candidate)
        plan = plan_replay(self.reader, pipeline, sample, segment_by, label)
        record = self.replays.create(
            pipeline, described, spec, start, end, sample, seed, segment_by, self.acting(actor)
        )
        self.changed(actor, "replay", f"pipeline {pipeline}", None, f"replay {record.id}: {described}")
        try:
            version = PipelineVersionRecord(pipeline, 0, spec, record.created_by, utc_now())
            loaded = load_pipeline(version, self.metadata, self.loader, BATCH_ROWS)
            self.replay_path(record.id).parent.mkdir(parents=True, exist_ok=True)
            summary = replay_rows(
                self.reader, loaded, plan, self.replay_path(record.id), start, end, sample, seed, progress
            )
        except Exception as exc:
            message = exc.message if isinstance(exc, FinalmileError) else f"{type(exc).__name__}: {exc}"
            self.replays.fail(record.id, message)
            raise
        return self.replays.finish(record.id, int(summary["rows"]), summary)

    def replay_path(self, replay_id: int) -> Path:
        return self.settings.home / "replays" / f"{replay_id}.parquet"

    def replay_rows(self, replay_id: int, limit: int | None = None, order_by: str = "disagreement") -> pa.Table:
        """A replay's per-row results; `order_by="disagreement"` puts the rows where the arms differ most first."""
        record = self.replays.get(replay_id)
        path = self.replay_path(record.id)
        if record.status != "finished" or not path.exists():
            return pa.table({})
        table = pq.read_table(path)
        if order_by == "disagreement" and "candidate_score" in table.column_names:
            import pyarrow.compute as pc

            gap = pc.abs(pc.subtract(table.column("candidate_score"), table.column("served_score")))
            table = table.take(pc.array_sort_indices(gap, order="descending", null_placement="at_end"))
        return table.slice(0, limit) if limit is not None else table
