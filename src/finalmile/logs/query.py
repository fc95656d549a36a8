"""Read-only SQL over the logs with DuckDB: views `logs`, `ground_truth`, `models`, `pipelines`.

`logs` reads the hive-partitioned Parquet files (`pipeline` and `date` come from the directory names), union by
name, because different pipeline versions log different columns. Its `time` is a UTC `TIMESTAMP`: truncating a
zoned timestamp goes through ICU for every row (an hourly count over 10 million rows: 0.9 s instead of 0.2 s), and
the SDK hands `time` back zoned as UTC.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, overload

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from finalmile.errors import QueryError
from finalmile.logs import sandbox
from finalmile.logs.journal import journal_column, set_aside
from finalmile.logs.sandbox import QueryLimits, T
from finalmile.pipelines.spec import ModelStepSpec, PipelineSpec, walk
from finalmile.pipelines.store import PipelineStore
from finalmile.registry.store import MetadataStore
from finalmile.schema import Schema

_EMPTY_LOGS = (
    "SELECT CAST(NULL AS TIMESTAMP) AS time, CAST(NULL AS VARCHAR) AS request_id, CAST(NULL AS INTEGER) AS row, "
    "CAST(NULL AS VARCHAR) AS pipeline, CAST(NULL AS INTEGER) AS pipeline_version, CAST(NULL AS VARCHAR) AS variant, "
    "CAST(NULL AS VARCHAR) AS model_versions, CAST(NULL AS DOUBLE) AS latency_ms, CAST(NULL AS VARCHAR) AS status, "
    "CAST(NULL AS DATE) AS date WHERE false"
)

_LOGGED_IDS = (
    "WITH logged_ids AS (SELECT request_id FROM logs WHERE pipeline = ? UNION ALL SELECT request_id FROM journal_ids)"
)
"""A pipeline's request ids, logged as Parquet or still journaled (`LogReader._with_journals`)."""


log = logging.getLogger(__name__)
_MAX_SET_ASIDE = 4
_PARQUET_PATH = re.compile(r"(/[^'\"\s]+\.parquet)")


def _same(table: pa.Table) -> pa.Table:
    return table


class _Databases:
    """Idle locked-down DuckDB databases, kept between reads by what they were made with: a new database costs
    ~30 ms (DuckDB registers its built-in functions in each), more than most reads. A database serves one read at
    a time, so its memory limit stays that read's own, through a cursor of its own."""

    KEPT = 2
    """Idle databases kept of each kind: as many as reads usually overlap (a monitor's run beside a query)."""

    def __init__(self) -> None:
        self._idle: dict[tuple[bool, bool, int], list[duckdb.DuckDBPyConnection]] = {}
        self._lock = threading.Lock()
        self._closed = False

    def take(
        self, kind: tuple[bool, bool, int], make: Callable[[], duckdb.DuckDBPyConnection]
    ) -> duckdb.DuckDBPyConnection:
        with self._lock:
            idle = self._idle.get(kind)
            if idle:
                return idle.pop()
        return make()

    def give_back(self, kind: tuple[bool, bool, int], database: duckdb.DuckDBPyConnection) -> None:
        """Keep `database` for the next read of its kind; those whose views no longer fit the home (the log's
        first part written since, say) are closed."""
        with self._lock:
            outdated = [k for k in self._idle if k[2] == kind[2] and k != kind]
            closing = [d for k in outdated for d in self._idle.pop(k)]
            idle = self._idle.setdefault(kind, [])
            if len(idle) < self.KEPT and not self._closed:
                idle.append(database)
            else:
                closing.append(database)
        for old in closing:
            old.close()

    def close(self) -> None:
        """Close every idle database (~30 MB each), and from now on each read's when it ends."""
        with self._lock:
            closing = [d for idle in self._idle.values() for d in idle]
            self._idle, self._closed = {}, True
        for database in closing:
            database.close()


class LogReader:
    """DuckDB over this home's logs, ground truth and metadata; flushes the writer first, so reads see what was
    served (the SDK, the API, monitors and the CLI all read through it)."""

    def __init__(
        self,
        home: Path,
        metadata: MetadataStore,
        pipelines: PipelineStore,
        flush: Callable[[], None],
        limits: QueryLimits | None = None,
        views: dict[str, Callable[[], pa.Table]] | None = None,
        told: Callable[[str], None] | None = None,
    ) -> None:
        self.home = home
        self.metadata = metadata
        self.pipelines = pipelines
        self.flush = flush
        self.limits = limits or QueryLimits()
        self.told = told or (lambda name: None)
        """Called with the name of each log part set aside as unreadable (the audit trail records it)."""
        self._checked: set[tuple[str, int]] = set()  # parts whose footer read, by path and size: parts never change
        self.views = views or {}
        """More views, built from the stores when a query names them (the audit trail)."""
        self._databases = _Databases()

    def close(self) -> None:
        """Let go of the databases kept for reads (the store closes)."""
        self._databases.close()

    @contextmanager
    def connection(self, memory_mb: int | None = None) -> Iterator[duckdb.DuckDBPyConnection]:
        """A DuckDB connection with the `logs` and `ground_truth` views, locked down (`sandbox`), for the length of
        a `with` block (a query registers the catalog views it names: `_register_catalog`). `memory_mb`: a lower
        memory limit than the queries' (DuckDB keeps what it read cached up to its limit: a read streamed a batch
        at a time needs little)."""
        self.flush()
        root = self.home / "logs"
        has_logs = bool(self._readable(list(Path(root).glob("pipeline=*/date=*/*.parquet"))))
        has_truth = bool(list(Path(self.home / "ground_truth").glob("pipeline=*/*.parquet")))
        limits = self.limits if memory_mb is None else dataclasses.replace(self.limits, memory_mb=memory_mb)
        kind = (has_logs, has_truth, limits.memory_mb)
        database = self._databases.take(kind, lambda: self._database(has_logs, has_truth, limits))
        conn = database.cursor()  # a connection of its own: what it registers or is interrupted by ends with it
        try:
            yield conn
        except BaseException:
            conn.close()
            database.close()  # whatever failed, the next read starts on a database nothing happened to
            raise
        conn.close()
        self._databases.give_back(kind, database)

    def _database(self, has_logs: bool, has_truth: bool, limits: QueryLimits) -> duckdb.DuckDBPyConnection:
        """An in-memory DuckDB database with the `logs` and `ground_truth` views, locked down."""
        conn = duckdb.connect()
        conn.execute("SET TimeZone = 'UTC'")  # hourly and daily buckets are UTC's, whatever the server's local zone
        # memory a read used goes back to the system within a second, not when the database closes: a database
        # is kept idle between reads
        conn.execute("SET allocator_background_threads = true")
        root = self.home / "logs"
        if has_logs:
            pattern = str(root / "pipeline=*" / "date=*" / "*.parquet").replace("'", "''")
            source = f"read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)"
            conn.execute(f"CREATE VIEW logs AS SELECT * REPLACE (make_timestamp(epoch_us(time)) AS time) FROM {source}")
        else:
            conn.execute(f"CREATE VIEW logs AS {_EMPTY_LOGS}")
        truth = self.home / "ground_truth"
        if has_truth:
            pattern = str(truth / "pipeline=*" / "*.parquet").replace("'", "''")
            conn.execute(
                "CREATE VIEW ground_truth AS SELECT * EXCLUDE (newest) FROM ("
                f"SELECT *, row_number() OVER (PARTITION BY pipeline, key ORDER BY received_at DESC) AS newest "
                f"FROM read_parquet('{pattern}', hive_partitioning = true, union_by_name = true)) WHERE newest = 1"
            )
        else:
            conn.execute(
                "CREATE VIEW ground_truth AS SELECT CAST(NULL AS VARCHAR) AS pipeline, CAST(NULL AS VARCHAR) AS key, "
                "CAST(NULL AS VARCHAR) AS key_column, CAST(NULL AS TIMESTAMPTZ) AS received_at WHERE false"
            )
        sandbox.lock_down(conn, [root, truth], limits)
        return conn

    def _register_catalog(self, conn: duckdb.DuckDBPyConnection, names: set[str]) -> None:
        """Build and register the catalog views among `names` (`models`, `pipelines`, and `views`' own): each is
        read from the stores, so only those a query names are built."""
        if "models" in names:
            models = pa.Table.from_pylist(
                [{"name": m.name, "versions": m.versions, "latest": m.latest} for m in self.metadata.list_models()],
                schema=pa.schema([("name", pa.string()), ("versions", pa.int64()), ("latest", pa.int64())]),
            )
            conn.register("models", models)
        if "pipelines" in names:
            pipelines = pa.Table.from_pylist(
                [{"name": d.name, "deployed_version": d.version} for d in self.pipelines.deployments()],
                schema=pa.schema([("name", pa.string()), ("deployed_version", pa.int64())]),
            )
            conn.register("pipelines", pipelines)
        for name, build in self.views.items():
            if name in names:
                conn.register(name, build())

    @overload
    def query(self, sql: str) -> pa.Table: ...

    @overload
    def query(self, sql: str, encode: Callable[[pa.Table], T]) -> T: ...

    def query(self, sql: str, encode: Callable[[pa.Table], Any] | None = None) -> Any:
        """Run one SELECT over the documented views in the sandbox (no files; bounded in time, memory, rows and
        bytes); `encode` turns the answer into what is sent (JSON, CSV), within the same time limit. A log part
        that turns out unreadable is set aside and the query runs again over the rest; no message names a path."""
        for _ in range(_MAX_SET_ASIDE):
            try:
                with self.connection() as conn:
                    self._register_catalog(conn, sandbox.check(conn, sql))
                    sandbox.check_plan(conn, sql)
                    return sandbox.run(conn, sql, self.limits, encode or _same)
            except QueryError as exc:
                if not self._set_aside_named(exc.message):
                    exc.reword(exc.message.replace(str(self.home) + "/", "").replace(str(self.home), "<home>"))
                    raise
        raise QueryError("sql: the log holds more unreadable parts than one query sets aside; ask again")

    def _readable(self, files: list[Path]) -> list[Path]:
        """`files` without those whose Parquet footer cannot be read (each set aside, once); a part is immutable,
        so each is read once per process."""
        kept = []
        for path in files:
            try:
                key = (str(path), path.stat().st_size)
                if key not in self._checked:
                    pq.read_metadata(path)
                    self._checked.add(key)
            except FileNotFoundError:
                continue  # expired meanwhile
            except (OSError, pa.ArrowException):
                self._set_aside(path)
                continue
            kept.append(path)
        return kept

    def _set_aside_named(self, message: str) -> bool:
        """Set aside the log part a DuckDB error names, if it is one of ours and cannot be read whole."""
        root = str(self.home / "logs")
        for found in _PARQUET_PATH.findall(message):
            path = Path(found)
            if found.startswith(root) and path.is_file():
                try:
                    pq.read_table(path)
                except (OSError, pa.ArrowException):
                    self._set_aside(path)
                    return True
        return False

    def _set_aside(self, path: Path) -> None:
        kept = set_aside(self.home / "logs", path)
        log.error("inference log part %s cannot be read: set aside as _corrupt/%s", path.name, kept)
        self.told(kept)

    def pipeline_logs(
        self,
        pipeline: str,
        start: datetime | None = None,
        end: datetime | None = None,
        limit: int | None = None,
        version: int | None = None,
        variant: str | None = None,
        columns: list[str] | None = None,
    ) -> pa.Table:
        """A pipeline's log rows, newest first; an unknown pipeline or an empty range is an empty table."""
        sql, params = _logs_sql(pipeline, start, end, version, variant, columns)
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        try:
            with self.connection() as conn:
                return zoned(conn.sql(sql, params=params).to_arrow_table())
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from None

    def export(
        self, pipeline: str, path: str | Path, start: datetime | None = None, end: datetime | None = None
    ) -> int:
        """Write a time range of a pipeline's log to Parquet, CSV or JSON lines (by extension), streamed in record
        batches so the range may be larger than memory; returns the rows written."""
        from finalmile.arrow.files import TableWriter

        sql, params = _logs_sql(pipeline, start, end, None, None, None, newest_first=False)
        rows = 0
        try:
            with self.connection() as conn, TableWriter(path) as writer:
                reader = conn.sql(sql, params=params).to_arrow_reader(100_000)
                for batch in reader:
                    writer.write(zoned(pa.Table.from_batches([batch])))
                    rows += batch.num_rows
                if rows == 0:
                    writer.write(zoned(reader.schema.empty_table()))
        except duckdb.Error as exc:
            raise QueryError(f"SQL error: {exc}") from None
        return rows

    def logged_ids(self, pipeline: str, request_ids: list[str]) -> set[str]:
        """Which of `request_ids` the pipeline's log already holds (a stream's redelivered messages)."""
        if not request_ids:
            return set()
        with self._with_journals(pipeline) as conn:
            rows = conn.execute(
                f"{_LOGGED_IDS} SELECT DISTINCT request_id FROM logged_ids WHERE request_id IN (SELECT unnest(?))",
                [pipeline, request_ids],
            ).fetchall()
        return {r[0] for r in rows}

    @contextmanager
    def _with_journals(self, pipeline: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for `_LOGGED_IDS`: the request ids of `pipeline`'s rows still in any process's journal (a
        stream's batch is durable, and acknowledged, before its journal is compacted) beside its Parquet parts'."""
        journaled = journal_column(self.home / "logs" / "_journal", pipeline, "request_id")  # before the parts
        with self.connection() as conn:
            ids = pa.chunked_array([chunk for c in journaled for chunk in c.cast(pa.string()).chunks], pa.string())
            conn.register("journal_ids", pa.table({"request_id": ids}))  # the journal's ids are dictionary-encoded
            yield conn

    def last_offsets(self, pipeline: str, topic: str) -> dict[int, int]:
        """Per partition, the highest offset of Kafka `topic` the pipeline's log holds (a Kafka message's id is
        `topic-partition-offset`): one scan, where looking up every message of a backlog would be one per batch."""
        with self._with_journals(pipeline) as conn:
            rows = conn.execute(
                f"{_LOGGED_IDS} SELECT TRY_CAST(parts[-2] AS INTEGER) AS p, max(TRY_CAST(parts[-1] AS BIGINT)) FROM ("
                "SELECT string_split(substr(request_id, length(?) + 2), '-') AS parts FROM logged_ids "
                "WHERE starts_with(request_id, ? || '-')) WHERE len(parts) = 2 GROUP BY p",
                [pipeline, topic, topic],
            ).fetchall()
        return {p: o for p, o in rows if p is not None and o is not None}

    def input_columns(self, pipeline: str) -> set[str]:
        """The `in_*` columns a pipeline's log has or will have: its models' inputs, and its log so far."""
        spec = PipelineSpec.model_validate(self.pipelines.get_version(pipeline).spec)
        columns = {c for c in self.logged_columns(pipeline) if c.startswith("in_")}
        for step in walk(list(spec.steps)):
            if isinstance(step, ModelStepSpec):
                inputs = Schema.model_validate(self.metadata.get_by_ref(step.model).schema).inputs or []
                columns |= {f"in_{c.name}" for c in inputs}
        return columns

    def logged_columns(self, pipeline: str) -> set[str]:
        """Every column name in the Parquet parts of a pipeline's log so far."""
        self.flush()
        return _column_names((self.home / "logs" / f"pipeline={pipeline}").glob("date=*/*.parquet"))

    def ground_truth_columns(self) -> set[str]:
        """Every column of the `ground_truth` view but `pipeline`, read from the files' footers, not a query."""
        return _column_names((self.home / "ground_truth").glob("pipeline=*/*.parquet"))


def _column_names(parts: Iterable[Path]) -> set[str]:
    names: set[str] = set()
    for part in parts:
        names |= set(pq.read_schema(part).names)
    return names


def utc(moment: datetime) -> datetime:
    """A moment as the naive UTC datetime the `logs` view's `time` compares with (naive ones are taken as UTC)."""
    return moment if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


def zoned(table: pa.Table) -> pa.Table:
    """The `time` column marked as UTC again, for the SDK (a cast of the type only: the values are UTC already)."""
    if "time" in table.column_names and table.schema.field("time").type == pa.timestamp("us"):
        index = table.column_names.index("time")
        return table.set_column(index, "time", table.column("time").cast(pa.timestamp("us", tz="UTC")))
    return table


def _logs_sql(
    pipeline: str,
    start: datetime | None,
    end: datetime | None,
    version: int | None,
    variant: str | None,
    columns: list[str] | None,
    newest_first: bool = True,
) -> tuple[str, list[object]]:
    where, params = ["pipeline = ?"], [pipeline]
    for clause, value in (
        ("time >= ?", start),
        ("time < ?", end),
        ("pipeline_version = ?", version),
        ("variant = ?", variant),
    ):
        if value is not None:
            where.append(clause)
            params.append(utc(value) if isinstance(value, datetime) else value)  # type: ignore[arg-type]
    selected = "*" if not columns else ", ".join('"' + c.replace('"', '""') + '"' for c in columns)
    order = "time DESC, row" if newest_first else "time, request_id, row"
    return f"SELECT {selected} FROM logs WHERE {' AND '.join(where)} ORDER BY {order}", list(params)
