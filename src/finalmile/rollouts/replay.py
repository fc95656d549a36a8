"""Replay: a range of a pipeline's logged inputs run through a candidate, compared with what was served.

The log is read in record batches (DuckDB, no sort: memory stays bounded whatever the range), each batch runs
through the candidate in this process (uploaded code in its sandbox, as when served), and each row's served and
candidate figures go to a Parquet file beside the store. The summary is then computed from that file with DuckDB:
agreement, score differences and their quantiles, both score histograms, the PSI of the candidate's scores against
the served ones (the drift assays' bins and formula), check rates, latency, quality against labels that have
arrived, shadows — overall and per segment. The same range, sample and seed give the same figures.
"""

from __future__ import annotations

import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from finalmile.errors import InvalidInputError
from finalmile.logs.query import LogReader, utc
from finalmile.monitoring.drift import psi, score_edges, shares
from finalmile.pipelines.loaded import LoadedPipeline

BATCH_ROWS = 65_536
WORKERS = max(1, min(4, os.cpu_count() or 1))
"""Slices of a batch run through the candidate at once."""
MIN_SLICE_ROWS = 4_096
HISTOGRAM_BINS = 20
SUMMARY_MEMORY_MB = 256
"""DuckDB's memory for the summary; more spills to a folder beside the replay's rows."""
QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
SCORE_NAMES = ("score", "probability", "prediction", "value")
"""Output columns compared as the score, in this order of preference (else the first numeric one in common)."""
_GROUND_TRUTH_META = {"pipeline", "key", "key_column", "received_at"}


def plan_replay(
    reader: LogReader, pipeline: str, sample: float | None, segment_by: str | None, label: str | None
) -> _Plan:
    """What a replay of `pipeline` reads, checked before anything runs or is stored (a 4xx naming the field)."""
    if sample is not None and not 0 < sample <= 1:
        raise InvalidInputError(f"sample: a fraction in (0, 1], got {sample}", {"field": "sample"})
    logged = reader.logged_columns(pipeline)
    if not logged:
        raise InvalidInputError(f"pipeline: '{pipeline}' has no logged traffic to replay", {"field": "pipeline"})
    return _Plan.of(logged, segment_by, label, reader)


def replay_rows(
    reader: LogReader,
    loaded: LoadedPipeline,
    plan: _Plan,
    output: Path,
    start: Any = None,
    end: Any = None,
    sample: float | None = None,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Run the range through `loaded` into `output` (one row per logged row); returns the summary."""
    try:
        with reader.connection() as conn:
            where, params = _where(loaded.name, start, end, sample, seed, plan.has_status)
            # The range is counted only for a progress bar to fill; the rows themselves are counted as they run.
            total = (
                conn.execute(f"SELECT count(*) FROM logs l WHERE {where}", params).fetchall()[0][0]
                if progress
                else None
            )
            stream = conn.sql(plan.select(where), params=params).to_arrow_reader(BATCH_ROWS)
            rows, seconds = _run(stream, loaded, plan, output, total)
    except duckdb.Error as exc:
        raise InvalidInputError(f"replay: the log cannot be read: {exc}") from None
    return summarise(output, plan, rows, seconds)


class _Plan:
    """Which logged columns the replay reads, and which it compares once the candidate's outputs are known."""

    def __init__(self, logged: set[str], segment: str | None, truth: str | None) -> None:
        self.inputs = sorted(c for c in logged if c.startswith("in_"))
        self.served = sorted(c for c in logged if c.startswith("out_"))
        self.checks = sorted(c[6:] for c in logged if c.startswith("check_"))
        self.logged_shadows = sorted(c for c in logged if c.startswith("shadow_"))
        self.segment, self.truth, self.latency = segment, truth, "latency_ms" in logged
        self.has_status = "status" in logged
        self.score: str | None = None
        self.label: str | None = None
        self.text: str | None = None  # a generated text both arms answer: exact matches and length compared
        self.shadows: list[str] = []
        self.decided = False

    @classmethod
    def of(cls, logged: set[str], segment_by: str | None, label: str | None, reader: LogReader) -> _Plan:
        segment = None
        if segment_by is not None:
            segment = next((c for c in (segment_by, f"in_{segment_by}", f"out_{segment_by}") if c in logged), None)
            if segment is None:
                raise InvalidInputError(f"segment_by: no logged column '{segment_by}'", {"field": "segment_by"})
        return cls(logged, segment, _truth(reader, label))

    def decide(self, produced: pa.Schema) -> None:
        """The score (a numeric output both arms have) and the label, from the candidate's first answer."""
        served = {c[4:] for c in self.served}
        common = [f.name for f in produced if f.name in served]
        if not common:
            raise InvalidInputError(
                f"candidate: its outputs ({', '.join(produced.names) or 'none'}) share no column with what was "
                f"served ({', '.join(sorted(served)) or 'none'})",
                {"field": "candidate"},
            )
        numeric = [n for n in common if _numeric(produced.field(n).type)]
        self.text = "completion" if "completion" in common else None
        preferred = ("tokens_out",) if self.text else SCORE_NAMES  # a generative answer's figure is its length
        self.score = next((n for n in preferred if n in numeric), numeric[0] if numeric else None)
        self.label = "label" if "label" in common else None
        if self.score:
            self.shadows = [c for c in self.logged_shadows if c.endswith(f"_{self.score}")]
        self.decided = True

    def select(self, where: str) -> str:
        chosen = ["l.request_id", "l.row", *(f'l."{c}"' for c in self.inputs + self.served + self.logged_shadows)]
        chosen += [f'l."check_{c}" AS "served_check_{c}"' for c in self.checks]
        if self.segment:
            chosen.append(f'CAST(l."{self.segment}" AS VARCHAR) AS segment')
        if self.latency:
            chosen.append("l.latency_ms AS served_latency_ms")
        join = ""
        if self.truth:
            chosen.append(f'g."{self.truth}" AS truth')
            join = " LEFT JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key = l.request_id"
        return f"SELECT {', '.join(chosen)} FROM logs l{join} WHERE {where}"


def _numeric(kind: pa.DataType) -> bool:
    return pa.types.is_floating(kind) or pa.types.is_integer(kind)


def _truth(reader: LogReader, label: str | None) -> str | None:
    """The ground-truth column to score both arms against: `label`, or the only label column there is."""
    candidates = sorted(reader.ground_truth_columns() - _GROUND_TRUTH_META)
    if label is not None:
        if label not in candidates:
            raise InvalidInputError(f"label: no ground-truth column '{label}'", {"field": "label"})
        return label
    return candidates[0] if len(candidates) == 1 else None


def _where(
    pipeline: str, start: Any, end: Any, sample: float | None, seed: int, has_status: bool
) -> tuple[str, list[Any]]:
    where: list[str] = ["l.pipeline = ?"]
    params: list[Any] = [pipeline]
    if start is not None:
        where.append("l.time >= ?")
        params.append(utc(start))
    if end is not None:
        where.append("l.time < ?")
        params.append(utc(end))
    if has_status:
        where.append("l.status IS DISTINCT FROM 'error'")  # failed requests have no inputs to replay
    if sample is not None and sample < 1:
        where.append("hash(l.request_id || ':' || CAST(l.row AS VARCHAR) || ':' || ?) % 1000000 < ?")
        params += [str(int(seed)), int(round(sample * 1_000_000))]
    return " AND ".join(where), params


def _run(stream: Any, loaded: LoadedPipeline, plan: _Plan, output: Path, total: int | None) -> tuple[int, float]:
    """Each batch through the candidate, its rows written to `output`; returns the rows and the candidate's seconds.
    `total`: the rows to expect, for a progress bar (None: no bar)."""
    from rich.progress import Progress

    rows_run, seconds = 0, 0.0
    writer: pq.ParquetWriter | None = None
    with Progress(disable=total is None, transient=True) as bar, ThreadPoolExecutor(WORKERS) as pool:
        task = bar.add_task(f"replaying {total or 0:,} rows through the candidate", total=total)
        for record_batch in stream:
            table = pa.Table.from_batches([record_batch])
            inputs = table.select(plan.inputs).rename_columns([c[3:] for c in plan.inputs])
            started = time.perf_counter()
            out, checks = _candidate(loaded, inputs, pool)
            seconds += time.perf_counter() - started
            if not plan.decided:
                plan.decide(out.schema)
            rows = _rows(table, out, checks, plan)
            writer = writer or pq.ParquetWriter(output, rows.schema)
            writer.write_table(rows)
            rows_run += table.num_rows
            bar.advance(task, table.num_rows)
    if writer is None:
        raise InvalidInputError("replay: no logged rows in the range (and sample) given", {"field": "start"})
    writer.close()
    return rows_run, seconds


def _candidate(
    loaded: LoadedPipeline, inputs: pa.Table, pool: ThreadPoolExecutor
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """The candidate's outputs and check flags for `inputs`, its slices run on every core (ONNX Runtime and the
    frameworks release the GIL while they compute; a sandboxed model's child takes one slice at a time)."""
    size = max(MIN_SLICE_ROWS, -(-inputs.num_rows // WORKERS))
    slices = [inputs.slice(i, size) for i in range(0, inputs.num_rows, size)]
    runs = list(pool.map(lambda part: loaded.run(loaded.conform(part), log=False), slices))
    table = pa.concat_tables([r.table for r in runs], promote_options="default")
    return table, {name: np.concatenate([r.checks[name] for r in runs]) for name in runs[0].checks}


def _rows(logged: pa.Table, out: pa.Table, checks: dict[str, np.ndarray], plan: _Plan) -> pa.Table:
    keep = ["request_id", "row"] + [c for c in ("segment", "truth", "served_latency_ms") if c in logged.column_names]
    columns: dict[str, Any] = {c: logged.column(c) for c in keep}
    if plan.score:
        columns["served_score"] = pc.cast(logged.column(f"out_{plan.score}"), pa.float64())
        columns["candidate_score"] = pc.cast(out.column(plan.score), pa.float64())
    for kind, produced in (("label", plan.label), ("text", plan.text)):  # compared as text
        if produced:
            columns[f"served_{kind}"] = pc.cast(logged.column(f"out_{produced}"), pa.string())
            columns[f"candidate_{kind}"] = pc.cast(out.column(produced), pa.string())
    for name in plan.checks:
        columns[f"served_check_{name}"] = logged.column(f"served_check_{name}")
        flags = checks.get(name)
        columns[f"candidate_check_{name}"] = pa.array(flags if flags is not None else [None] * out.num_rows, pa.bool_())
    for name in plan.shadows:
        columns[name] = pc.cast(logged.column(name), pa.float64())
    return pa.table(columns)


def summarise(path: Path, plan: _Plan, total: int, seconds: float) -> dict[str, Any]:
    """The replay's figures, from its per-row file (bounded memory: DuckDB aggregates)."""
    conn = duckdb.connect()
    try:
        spill = path.parent / f".{path.stem}-spill"  # aggregates larger than the limit go to disk, not to memory
        conn.execute(f"SET memory_limit = '{SUMMARY_MEMORY_MB}MB'")
        conn.execute(f"SET temp_directory = '{str(spill).replace(chr(39), chr(39) * 2)}'")
        conn.execute(f"CREATE VIEW r AS SELECT * FROM read_parquet('{str(path).replace(chr(39), chr(39) * 2)}')")
        summary: dict[str, Any] = {"rows": total, "score": plan.score, "label": plan.label, "text": plan.text}
        summary |= _figures(conn, plan, "true")
        bounds = _score_bounds(conn) if plan.score else None
        edges = _edges(conn, *bounds) if bounds else None
        if bounds and edges is not None:
            summary["psi"] = _psi(conn, edges, "true")
            summary["histogram"] = _histogram(conn, *bounds)
        summary["checks"] = {
            c: dict(
                zip(
                    ("served", "candidate"),
                    conn.execute(
                        f'SELECT avg("served_check_{c}"::DOUBLE), avg("candidate_check_{c}"::DOUBLE) FROM r'
                    ).fetchall()[0],
                    strict=True,
                )
            )
            for c in plan.checks
        }
        served = (None, None)
        if plan.latency:  # a request's latency shared by its rows: per row, as the candidate's is measured
            served = conn.execute(  # each request's latency counted once, over the rows it answered
                "SELECT sum(l * n) / sum(n), sum(l) / sum(n) FROM "
                "(SELECT any_value(served_latency_ms) AS l, count(*) AS n FROM r GROUP BY request_id)"
            ).fetchall()[0]
        summary["latency_ms"] = {
            "served_request_mean": served[0],
            "served_per_row": served[1],
            "candidate_per_row": 1000 * seconds / max(total, 1),
        }
        summary["rows_per_s"] = total / seconds if seconds > 0 else None
        summary["quality"] = _quality(conn, plan)
        summary["shadows"] = {
            name.removeprefix("shadow_").removesuffix(f"_{plan.score}"): conn.execute(
                f'SELECT avg(abs(candidate_score - "{name}")) FROM r WHERE "{name}" IS NOT NULL'
            ).fetchall()[0][0]
            for name in plan.shadows
        }
        if plan.segment:
            summary["segments"] = {}
            for (value,) in conn.execute("SELECT DISTINCT segment FROM r ORDER BY segment NULLS LAST").fetchall():
                chosen = (
                    "segment IS NULL" if value is None else f"segment = '{str(value).replace(chr(39), chr(39) * 2)}'"
                )
                figures = _figures(conn, plan, chosen)
                if edges is not None:
                    figures["psi"] = _psi(conn, edges, chosen)
                summary["segments"][str(value)] = figures
        return summary
    finally:
        conn.close()
        shutil.rmtree(spill, ignore_errors=True)


def _figures(
    conn: duckdb.DuckDBPyConnection, plan: _Plan, where: str, params: list[Any] | None = None
) -> dict[str, Any]:
    params = params or []
    figures: dict[str, Any] = {"rows": conn.execute(f"SELECT count(*) FROM r WHERE {where}", params).fetchall()[0][0]}
    if plan.label:
        figures["agreement"] = conn.execute(
            f"SELECT avg((served_label IS NOT DISTINCT FROM candidate_label)::DOUBLE) FROM r WHERE {where}", params
        ).fetchall()[0][0]
    if plan.score:
        row = conn.execute(
            "SELECT avg(d), avg(abs(d)), min(d), max(d), quantile_cont(d, ?) FROM "
            f"(SELECT candidate_score - served_score AS d FROM r WHERE {where}) WHERE d IS NOT NULL AND NOT isnan(d)",
            [list(QUANTILES), *params],
        ).fetchall()[0]
        quantiles = dict(zip((f"p{int(q * 100):02d}" for q in QUANTILES), row[4] or [None] * 5, strict=True))
        figures["difference"] = {"mean": row[0], "mean_abs": row[1], "min": row[2], "max": row[3]} | quantiles
    if plan.text:
        same, *lengths = conn.execute(
            "SELECT avg((served_text IS NOT DISTINCT FROM candidate_text)::DOUBLE), avg(length(served_text)), "
            f"avg(length(candidate_text)) FROM r WHERE {where}", params).fetchall()[0]  # fmt: skip
        figures |= {"exact_match": same, "text_length": dict(zip(("served", "candidate"), lengths, strict=True))}
    return figures


def _score_bounds(conn: duckdb.DuckDBPyConnection) -> tuple[float, float] | None:
    """The lowest and highest score of either arm (None: no score to compare)."""
    low, high = conn.execute(
        "SELECT least(min(served_score), min(candidate_score)), greatest(max(served_score), max(candidate_score)) "
        "FROM r WHERE NOT isnan(served_score) AND NOT isnan(candidate_score)"
    ).fetchall()[0]
    return None if low is None else (float(low), float(high))


def _edges(conn: duckdb.DuckDBPyConnection, low: float, high: float) -> np.ndarray:
    """The PSI bins' interior edges (`monitoring.drift.score_edges`), the served scores as the reference."""

    def deciles(at: np.ndarray) -> np.ndarray:
        found = conn.execute(
            "SELECT quantile_cont(served_score, ?) FROM r WHERE NOT isnan(served_score)", [list(at)]
        ).fetchall()[0][0]
        return np.asarray(found, dtype=np.float64)

    return score_edges(low, high, deciles)


def _psi(conn: duckdb.DuckDBPyConnection, edges: np.ndarray, where: str, params: list[Any] | None = None) -> float:
    """PSI of the candidate's scores against the served ones, binned as `monitoring.drift.histogram` bins."""

    def counts(column: str) -> np.ndarray:
        bucket = " + ".join(f"({column} >= {float(e)!r})::INT" for e in edges)
        rows = conn.execute(
            f"SELECT CASE WHEN {column} = {float(edges[-1])!r} THEN {len(edges) - 1} ELSE {bucket} END AS b, "
            f"count(*) FROM r WHERE {where} AND {column} IS NOT NULL AND NOT isnan({column}) GROUP BY b",
            params or [],
        ).fetchall()
        out = np.zeros(len(edges) + 1)
        for index, n in rows:
            out[int(index)] = n
        return out

    return psi(shares(counts("served_score")), shares(counts("candidate_score")))


def _histogram(conn: duckdb.DuckDBPyConnection, low: float, high: float) -> dict[str, Any]:
    """Both arms' scores in the same equal-width bins over [`low`, `high`], for the two histograms people compare."""
    width = (high - low) / HISTOGRAM_BINS or 1.0
    out = {}
    for column in ("served_score", "candidate_score"):
        rows = conn.execute(
            f"SELECT least(CAST(floor(({column} - ?) / ?) AS INTEGER), {HISTOGRAM_BINS - 1}) AS b, count(*) "
            f"FROM r WHERE NOT isnan({column}) GROUP BY b",
            [low, width],
        ).fetchall()
        counts = [0] * HISTOGRAM_BINS
        for index, n in rows:
            counts[int(index)] = int(n)
        out[column.removesuffix("_score")] = counts
    return {"edges": [low + i * width for i in range(HISTOGRAM_BINS + 1)]} | out


def _quality(conn: duckdb.DuckDBPyConnection, plan: _Plan) -> dict[str, Any] | None:
    """Both arms scored against the labels that have arrived: accuracy for labels, RMSE and MAE for scores."""
    if not plan.truth:
        return None
    if plan.label:
        row = conn.execute(
            "SELECT count(*), avg((served_label = CAST(truth AS VARCHAR))::DOUBLE), "
            "avg((candidate_label = CAST(truth AS VARCHAR))::DOUBLE) FROM r WHERE truth IS NOT NULL"
        ).fetchall()[0]
        return {"metric": "accuracy", "label": plan.truth, "rows": row[0], "served": row[1], "candidate": row[2]}
    if plan.score:
        row = conn.execute(
            "SELECT count(*), sqrt(avg(power(served_score - truth, 2))), sqrt(avg(power(candidate_score - truth, 2))), "
            "avg(abs(served_score - truth)), avg(abs(candidate_score - truth)) FROM r WHERE truth IS NOT NULL"
        ).fetchall()[0]
        return {
            "metric": "rmse",
            "label": plan.truth,
            "rows": row[0],
            "served": row[1],
            "candidate": row[2],
            "mae": {"served": row[3], "candidate": row[4]},
        }
    return None
