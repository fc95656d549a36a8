"""What the pages show, aggregated in DuckDB over the same `logs` and `ground_truth` views as the SQL API.

Every figure is one `GROUP BY` in SQL: a page over a million logged rows reads a few hundred aggregated rows into
Python, never the rows themselves. Times are UTC; buckets are `BUCKET_S` wide over the last day.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb

from finalmile.logs.ground_truth import is_number, key_matches, logged_types
from finalmile.logs.query import LogReader
from finalmile.monitoring.kinds.base import quote

BUCKET_S = 900
"""Sparklines and traffic charts: one point per 15 minutes over the last 24 hours."""
HISTOGRAM_BINS = 20
_TRUTH_META = {"pipeline", "key", "key_column", "received_at"}


@dataclass
class Traffic:
    """A pipeline's traffic over the last hour and day, from its log."""

    requests_hour: int = 0
    rows_hour: int = 0
    requests_day: int = 0
    rows_day: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    spark: list[int] = field(default_factory=list)
    """Rows per bucket over the last day, oldest first."""

    @property
    def requests_per_s_hour(self) -> float:
        return self.requests_hour / 3600

    @property
    def rows_per_s_hour(self) -> float:
        return self.rows_hour / 3600

    @property
    def requests_per_s_day(self) -> float:
        return self.requests_day / 86400

    @property
    def rows_per_s_day(self) -> float:
        return self.rows_day / 86400


def bucket_starts(now: datetime) -> list[int]:
    """The epoch seconds of each bucket over the day before `now`, oldest first."""
    last = int(now.timestamp()) // BUCKET_S * BUCKET_S
    return [last - BUCKET_S * i for i in range(86400 // BUCKET_S - 1, -1, -1)]


def _since(now: datetime) -> tuple[datetime, datetime]:
    naive = now.astimezone(UTC).replace(tzinfo=None)  # the view's `time` is a UTC TIMESTAMP
    return naive - timedelta(hours=1), naive - timedelta(days=1)


def _day(alias: str = "") -> str:
    """Rows of the last day; the `date` partition prunes older files unread."""
    return f"{alias}time >= $day AND {alias}date >= CAST($day AS DATE)"


def _of_pipeline(alias: str = "") -> str:
    return f"{alias}pipeline = $name AND {_day(alias)}"


def traffic(conn: duckdb.DuckDBPyConnection, now: datetime) -> dict[str, Traffic]:
    """Every pipeline's traffic; `row = 0` counts each request once and weighs its latency once."""
    hour, day = _since(now)
    found: dict[str, Traffic] = {}
    for name, *figures in conn.execute(
        "SELECT pipeline, count(*) FILTER (WHERE row = 0 AND time >= $hour), count(*) FILTER (WHERE time >= $hour), "
        "count(*) FILTER (WHERE row = 0), count(*), quantile_cont(latency_ms, 0.5) FILTER (WHERE row = 0), "
        f"quantile_cont(latency_ms, 0.99) FILTER (WHERE row = 0) FROM logs WHERE {_day()} GROUP BY pipeline",
        {"hour": hour, "day": day},
    ).fetchall():
        found[name] = Traffic(*figures)
    starts = bucket_starts(now)
    index = {t: i for i, t in enumerate(starts)}
    for t in found.values():
        t.spark = [0] * len(starts)
    for name, bucket, rows in conn.execute(
        f"SELECT pipeline, CAST(epoch(time) AS BIGINT) // {BUCKET_S} * {BUCKET_S}, count(*) FROM logs "
        f"WHERE {_day()} GROUP BY ALL",
        {"day": day},
    ).fetchall():
        if name in found and bucket in index:
            found[name].spark[index[bucket]] = rows
    return found


@dataclass
class PipelineFigures:
    """A pipeline page's charts and tables: per-variant traffic, scores, agreement with the champion, accuracy."""

    variants: list[dict[str, Any]] = field(default_factory=list)
    traffic: dict[str, list[int]] = field(default_factory=dict)
    """Rows per bucket and variant (`-` where there is no split)."""
    score_column: str | None = None
    score_edges: list[float] = field(default_factory=list)
    scores: dict[str, list[int]] = field(default_factory=dict)
    agreement: list[dict[str, Any]] = field(default_factory=list)
    accuracy_column: str | None = None
    accuracy: dict[str, list[float | None]] = field(default_factory=dict)
    """Hourly accuracy per variant against ground truth (None: no labelled rows that hour)."""
    accuracy_hours: list[int] = field(default_factory=list)
    accuracy_error: str | None = None
    """Why the labels could not be read, shown in the chart's place (the rest of the page does not need them)."""
    recent: list[dict[str, Any]] = field(default_factory=list)
    """The last requests answered, each a link to its explanation."""
    sites: list[dict[str, Any]] = field(default_factory=list)
    """Requests and rows per edge site (and `central`), with each site's newest row: empty without edge rows."""
    generation: dict[str, Any] | None = None
    """A generative pipeline's day: TTFT p50/p99, median tokens/s, tokens per call, overall and per bucket."""


def pipeline_figures(conn: duckdb.DuckDBPyConnection, reader: LogReader, name: str, now: datetime) -> PipelineFigures:
    """The last day of one pipeline."""
    _, day = _since(now)
    where = f"pipeline = $name AND {_day()}"
    params: dict[str, Any] = {"name": name, "day": day}
    figures = PipelineFigures()
    for variant, requests, rows, p50, p99 in conn.execute(
        "SELECT coalesce(variant, '-'), count(*) FILTER (WHERE row = 0), count(*), "
        "quantile_cont(latency_ms, 0.5) FILTER (WHERE row = 0), quantile_cont(latency_ms, 0.99) FILTER (WHERE row = 0) "
        f"FROM logs WHERE {where} GROUP BY 1 ORDER BY 1",
        params,
    ).fetchall():
        figures.variants.append({"variant": variant, "requests": requests, "rows": rows, "p50_ms": p50, "p99_ms": p99})
    starts = bucket_starts(now)
    index = {t: i for i, t in enumerate(starts)}
    for variant, bucket, rows in conn.execute(
        f"SELECT coalesce(variant, '-'), CAST(epoch(time) AS BIGINT) // {BUCKET_S} * {BUCKET_S}, count(*) "
        f"FROM logs WHERE {where} GROUP BY ALL",
        params,
    ).fetchall():
        if bucket in index:
            figures.traffic.setdefault(variant, [0] * len(starts))[index[bucket]] = rows
    columns = _column_types(conn, reader.logged_columns(name))
    if "site" in columns:  # rows pushed home by edge sites (`edge/link.py`); this server's own are `central`
        figures.sites = [
            {"site": site, "requests": requests, "rows": rows, "last": last}
            for site, requests, rows, last in conn.execute(
                "SELECT coalesce(site, 'central'), count(*) FILTER (WHERE row = 0), count(*), max(time) "
                f"FROM logs WHERE {where} GROUP BY 1 ORDER BY 1",
                params,
            ).fetchall()
        ]
    score = f', first("{figures.score_column or "out_score"}")' if "out_score" in columns else ", NULL"
    figures.recent = [
        {"request_id": rid, "time": at, "rows": n, "score": value}
        for rid, at, n, value in conn.execute(
            f"SELECT request_id, max(time), count(*){score} FROM logs WHERE {where} AND status = 'ok' "
            "GROUP BY 1 ORDER BY 2 DESC LIMIT 10",
            params,
        ).fetchall()
    ]
    if "out_ttft_ms" in columns and "out_tokens_out" in columns:
        figures.generation = _generation(conn, starts, where, params)
    else:
        _scores(conn, figures, columns, where, params)
    _agreement(conn, figures, columns, where, params)
    try:
        _accuracy(conn, figures, columns, params)
    except duckdb.Error as exc:  # labels DuckDB cannot read together (written before uploads were checked)
        figures.accuracy_error = re.sub(r'file "[^"]*"', "a label file", str(exc).splitlines()[0])[:300]  # no paths
    return figures


def _generation(conn: duckdb.DuckDBPyConnection, starts: list[int], where: str, params: Any) -> dict[str, Any]:
    """What matters of a generative pipeline: time to first token (p50, p99), output tokens/s (median per call) and
    tokens per call, for the day and per bucket."""
    figures = (
        "quantile_cont(out_ttft_ms, 0.5), quantile_cont(out_ttft_ms, 0.99), median(out_tokens_per_s), "
        "avg(out_tokens_in), avg(out_tokens_out), count(*)"
    )
    served = f"{where} AND status = 'ok' AND out_ttft_ms IS NOT NULL"
    day = conn.execute(f"SELECT {figures} FROM logs WHERE {served}", params).fetchone() or (None,) * 6
    names = ("ttft_p50", "ttft_p99", "tokens_per_s", "tokens_in", "tokens_out")
    series: dict[str, list[float | None]] = {n: [None] * len(starts) for n in names}
    index = {t: i for i, t in enumerate(starts)}
    for bucket, *values in conn.execute(
        f"SELECT CAST(epoch(time) AS BIGINT) // {BUCKET_S} * {BUCKET_S}, {figures} FROM logs WHERE {served} GROUP BY 1",
        params,
    ).fetchall():
        if bucket in index:
            for name, value in zip(names, values, strict=False):
                series[name][index[bucket]] = value
    return {"day": dict(zip((*names, "calls"), day, strict=True)), "series": series}


def _column_types(conn: duckdb.DuckDBPyConnection, logged: set[str]) -> dict[str, str]:
    return {name: kind for name, kind in logged_types(conn).items() if name in logged}


def _is_float(kind: str) -> bool:
    return kind in ("DOUBLE", "FLOAT", "REAL") or kind.startswith("DECIMAL")


def _scores(
    conn: duckdb.DuckDBPyConnection, figures: PipelineFigures, columns: dict[str, str], where: str, params: Any
) -> None:
    """A histogram per variant of the first floating-point output (a score or a probability)."""
    score = next((c for c in sorted(columns) if c.startswith("out_") and _is_float(columns[c])), None)
    if score is None:
        return
    q = quote(score)
    lo, hi = conn.execute(f"SELECT min({q}), max({q}) FROM logs WHERE {where}", params).fetchone() or (None, None)
    if lo is None or hi is None:
        return
    width = (hi - lo) / HISTOGRAM_BINS or 1.0
    figures.score_column = score
    figures.score_edges = [lo + width * i for i in range(HISTOGRAM_BINS + 1)]
    for variant, bin_, rows in conn.execute(
        f"SELECT coalesce(variant, '-'), least(CAST(floor(({q} - $lo) / $width) AS INTEGER), {HISTOGRAM_BINS - 1}), "
        f"count(*) FROM logs WHERE {where} AND {q} IS NOT NULL AND isfinite({q}) GROUP BY ALL",
        params | {"lo": lo, "width": width},
    ).fetchall():
        figures.scores.setdefault(variant, [0] * HISTOGRAM_BINS)[bin_] = rows


def _agreement(
    conn: duckdb.DuckDBPyConnection, figures: PipelineFigures, columns: dict[str, str], where: str, params: Any
) -> None:
    """How often each shadow challenger agrees with the champion: equal labels, or scores within 0.01."""
    outputs = [c[4:] for c in columns if c.startswith("out_")]
    for shadow in sorted(c for c in columns if c.startswith("shadow_")):
        base = next((o for o in sorted(outputs, key=len, reverse=True) if shadow.endswith("_" + o)), None)
        if base is None:
            continue
        challenger = shadow[len("shadow_") : -len(base) - 1]
        s, o = quote(shadow), quote("out_" + base)
        same = f"abs({s} - {o}) <= 0.01" if _is_float(columns[shadow]) else f"{s} = {o}"
        rows, agree = conn.execute(
            f"SELECT count(*), avg(CAST({same} AS DOUBLE)) FROM logs WHERE {where} AND {s} IS NOT NULL", params
        ).fetchone() or (0, None)
        figures.agreement.append(
            {
                "challenger": challenger,
                "output": base,
                "rule": "within 0.01" if _is_float(columns[shadow]) else "equal",
                "rows": rows,
                "agreement": agree,
            }
        )


def _accuracy(conn: duckdb.DuckDBPyConnection, figures: PipelineFigures, columns: dict[str, str], params: Any) -> None:
    """Hourly accuracy per variant: the output named like the label (or `out_label`) against the newest label."""
    label_types = {r[0]: str(r[1]) for r in conn.execute("DESCRIBE ground_truth").fetchall() if r[0] not in _TRUTH_META}
    labels = list(label_types)
    keys = [
        r[0]
        for r in conn.execute(
            "SELECT DISTINCT key_column FROM ground_truth WHERE pipeline = $name", {"name": params["name"]}
        ).fetchall()
    ]
    chosen = next(((lab, f"out_{lab}") for lab in labels if f"out_{lab}" in columns), None)
    if chosen is None and labels and "out_label" in columns:
        chosen = (labels[0], "out_label")
    keys = [k for k in keys if k in columns]
    if chosen is None or not keys:
        return
    label, prediction = chosen
    same = f"l.{quote(prediction)} = g.{quote(label)}"
    if not (is_number(columns[prediction]) and is_number(label_types[label])):  # 'yes' labels, 1 predicted: unequal
        same = f"CAST(l.{quote(prediction)} AS VARCHAR) = CAST(g.{quote(label)} AS VARCHAR)"
    joins = " UNION ALL ".join(
        f"SELECT l.time, coalesce(l.variant, '-') AS variant, CAST({same} AS DOUBLE) "
        f"AS hit FROM logs l JOIN ground_truth g ON g.pipeline = l.pipeline AND g.key_column = '{k}' "
        f"AND {key_matches(f'l.{quote(k)}', columns[k])} WHERE {_of_pipeline('l.')} AND g.{quote(label)} IS NOT NULL"
        for k in keys
    )
    hours: dict[int, dict[str, float]] = {}
    for hour, variant, accuracy in conn.execute(
        f"SELECT CAST(epoch(time) AS BIGINT) // 3600 * 3600, variant, avg(hit) FROM ({joins}) GROUP BY ALL", params
    ).fetchall():
        hours.setdefault(hour, {})[variant] = accuracy
    figures.accuracy_column = f"{prediction} = {label}"
    figures.accuracy_hours = sorted(hours)
    variants = sorted({v for by in hours.values() for v in by})
    figures.accuracy = {v: [hours[h].get(v) for h in figures.accuracy_hours] for v in variants}
