"""The SQL surface reads the documented views and nothing else: no files, no settings, bounded in time and rows."""

from __future__ import annotations

import time
from pathlib import Path

import duckdb
import pyarrow as pa
import pytest

from finalmile import Client
from finalmile.errors import QueryError
from finalmile.logs.sandbox import VIEWS, QueryLimits
from tests.fixtures import SumModel, tabular

X, _ = tabular(20)


@pytest.fixture
def served(sqlite_client: Client) -> Client:
    sqlite_client.upload_model("sum", SumModel, sample=X.head(5))
    p = sqlite_client.build_pipeline("p").add_model_step("sum:1")
    p.deploy()
    p.infer(X.head(3))
    return sqlite_client


def test_the_views_answer(served: Client) -> None:
    assert served.query("SELECT count(*) AS n FROM logs").n[0] == 3
    assert served.query("WITH recent AS (SELECT * FROM logs) SELECT count(*) AS n FROM recent").n[0] == 3
    assert served.query("SELECT count(*) AS n FROM range(5)").n[0] == 5  # harmless table functions stay
    assert set(VIEWS) == {"logs", "ground_truth", "models", "pipelines", "audit", "replays"}


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv() is not allowed"),
        ("SELECT * FROM read_text('/etc/passwd')", "read_text() is not allowed"),
        ("SELECT * FROM read_blob('/etc/passwd')", "read_blob() is not allowed"),
        ("SELECT * FROM glob('/etc/*')", "glob() is not allowed"),
        ("SELECT * FROM '/etc/passwd'", "is not one of the views"),
        ("SELECT * FROM logs WHERE request_id IN (SELECT column0 FROM read_csv('/etc/hosts'))", "read_csv()"),
        ("SELECT * FROM information_schema.tables", "'tables' is not one of the views"),
        ("SELECT getenv('HOME')", "getenv() is not allowed"),
        ("SELECT current_setting('allowed_directories')", "current_setting() is not allowed"),
        ("COPY (SELECT 1) TO '/tmp/out.csv'", "read-only"),
        ("ATTACH '/tmp/other.db'", "read-only"),
        ("INSTALL httpfs", "read-only"),
        ("LOAD httpfs", "read-only"),
        ("SET enable_external_access = true", "read-only"),
        ("SELECT 1; SELECT 2", "exactly one SQL statement"),
    ],
)
def test_files_settings_and_writes_are_refused_naming_why(served: Client, sql: str, refusal: str) -> None:
    with pytest.raises(QueryError, match="sql: .*" + refusal.replace("(", r"\(").replace(")", r"\)")) as raised:
        served.query(sql)
    assert raised.value.status_code == 400 and raised.value.detail["field"] == "sql"


def test_the_connection_itself_cannot_read_files(served: Client, tmp_path: Path) -> None:
    """The second wall: even a query that got past the checks could not open a file outside the views' folders."""
    (tmp_path / "secret.csv").write_text("a\n1\n")
    with served.services.reader.connection() as conn:
        with pytest.raises(Exception, match="disabled by configuration|Permission"):
            conn.sql(f"SELECT * FROM read_csv('{tmp_path / 'secret.csv'}')").fetchall()
        with pytest.raises(Exception, match="lock|configuration"):
            conn.execute("SET enable_external_access = true")


def test_a_result_over_the_row_cap_is_refused_not_cut(served: Client) -> None:
    served.services.reader.limits = QueryLimits(max_rows=10)
    assert len(served.query("SELECT * FROM range(10)")) == 10
    with pytest.raises(QueryError, match="more than 10 rows; aggregate, filter or add LIMIT"):
        served.query("SELECT * FROM range(11)")


def test_a_query_past_the_time_limit_is_stopped(served: Client) -> None:
    served.services.reader.limits = QueryLimits(timeout_s=0.2)
    with pytest.raises(QueryError, match="ran past the 0.2 s limit"):
        served.query("SELECT count(*) FROM range(100000000000) a, range(10) b")


def test_the_time_limit_covers_encoding_the_answer(served: Client) -> None:
    served.services.reader.limits = QueryLimits(timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(QueryError, match="ran past the 0.5 s limit") as raised:
        served.services.reader.query("SELECT 1 AS x", lambda table: time.sleep(3))  # an encoding that never ends
    assert time.monotonic() - started < 2 and raised.value.detail["limit"] == "timeout_s"


@pytest.mark.parametrize(
    ("sql", "limit", "words"),
    [
        # one viewer's query took the server from 223 MB to 4.5 GB and answered a 1.39 GB body
        ("SELECT list(x) AS x FROM range(150000000) t(x)", "memory_mb", "more than its 200 MB of memory"),
        ("SELECT x, repeat('x', 1000) AS pad FROM range(20000) t(x)", "max_bytes", "larger than 4 MiB"),
        # a plain-text 500 before: a value past pyarrow's 2 GiB string limit
        ("SELECT string_agg(repeat('x', 1000000), '') AS s FROM range(3000)", "memory_mb", "of memory"),
    ],
)
def test_a_query_that_would_exhaust_the_server_is_refused_naming_the_limit(
    served: Client, sql: str, limit: str, words: str
) -> None:
    served.services.reader.limits = QueryLimits(memory_mb=200, max_bytes=4 * 2**20)
    with pytest.raises(QueryError, match=words) as raised:
        served.query(sql)
    assert raised.value.status_code == 400 and raised.value.detail["limit"] == limit


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM (WITH duckdb_views AS (SELECT 1) SELECT 1) t, duckdb_views",
        "SELECT * FROM (WITH duckdb_tables AS (SELECT 1) SELECT 1) t, duckdb_tables",
        "SELECT * FROM (WITH duckdb_columns AS (SELECT 1) SELECT 1) t, (SELECT * FROM duckdb_columns) s",
    ],
)
def test_a_cte_in_another_scope_does_not_open_the_catalog(served: Client, sql: str) -> None:
    with pytest.raises(QueryError, match="is not one of the views") as raised:
        served.query(sql)
    assert "logs/" not in raised.value.message and "parquet" not in raised.value.message.lower()


def test_a_kept_database_sees_new_parts_and_forgets_what_each_read_registered(sqlite_client: Client) -> None:
    """Reads share locked-down databases kept idle between them (a new one costs ~30 ms), yet each read sees the log
    as it is then, keeps its own memory limit, and sees nothing an earlier read registered or failed on."""
    reader = sqlite_client.services.reader
    assert len(sqlite_client.query("SELECT * FROM logs")) == 0  # no part yet: the empty view
    sqlite_client.upload_model("sum", SumModel, sample=X.head(5))
    pipeline = sqlite_client.build_pipeline("p").add_model_step("sum:1")
    pipeline.deploy()
    pipeline.infer(X.head(3))
    assert sqlite_client.query("SELECT count(*) AS n FROM logs").n[0] == 3  # the first part, on a database made since
    pipeline.infer(X.head(2))
    assert sqlite_client.query("SELECT count(*) AS n FROM logs").n[0] == 5  # a kept database, a new part
    with reader.connection() as conn:
        conn.register("scratch", pa.table({"a": [1]}))
    with reader.connection() as conn:
        with pytest.raises(duckdb.CatalogException):
            conn.sql("SELECT * FROM scratch").fetchall()
    for memory_mb, limit in ((128, "122.0 MiB"), (None, "976.5 MiB"), (128, "122.0 MiB")):  # one after another
        with reader.connection(memory_mb=memory_mb) as conn:
            assert conn.execute("SELECT current_setting('memory_limit')").fetchall()[0][0] == limit
    kept = sum(len(idle) for idle in reader._databases._idle.values())
    with pytest.raises(duckdb.Error), reader.connection() as conn:
        conn.sql("SELECT * FROM no_such_view").fetchall()
    assert sum(len(idle) for idle in reader._databases._idle.values()) == kept - 1  # closed, not kept
    assert sqlite_client.query("SELECT count(*) AS n FROM logs").n[0] == 5
    reader.close()  # the store closes: nothing is kept idle any more, and reads still answer
    assert sqlite_client.query("SELECT count(*) AS n FROM logs").n[0] == 5
    assert not any(reader._databases._idle.values())


def test_reads_from_many_threads_at_once_each_get_a_database_of_their_own(served: Client) -> None:
    """The API answers queries from a thread pool, beside monitors' reads: reads that overlap never share a database
    (each sees its own memory limit and its own registered tables), and no more than a few are kept idle after."""
    from concurrent.futures import ThreadPoolExecutor

    reader = served.services.reader

    def read(i: int) -> tuple[int, str, int]:
        memory_mb = 128 if i % 2 else None
        with reader.connection(memory_mb=memory_mb) as conn:
            conn.register("mine", pa.table({"i": [i]}))
            limit = conn.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
            rows = conn.execute("SELECT count(*) FROM logs").fetchall()[0][0]
            time.sleep(0.01)  # overlap with the other threads' reads
            return conn.execute("SELECT i FROM mine").fetchall()[0][0], limit, rows

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(read, range(30)))
    assert [a[0] for a in answers] == list(range(30))
    assert all(limit == ("122.0 MiB" if i % 2 else "976.5 MiB") for i, (_, limit, _) in enumerate(answers))
    assert all(rows == 3 for _, _, rows in answers)
    assert all(len(idle) <= 2 for idle in reader._databases._idle.values())
    assert served.query("SELECT count(*) AS n FROM logs").n[0] == 3
