"""The inference log: what a row holds, durability, a torn journal, read-only SQL, and the CLI."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client, FinalmileError
from finalmile.arrow.frames import tensor_array
from finalmile.backends.base import InferRequest
from finalmile.logs.journal import set_aside_files
from finalmile.logs.records import Served, log_table, take_strings
from finalmile.logs.writer import LogWriter, read_journal
from tests.fixtures import tabular
from tests.unit.cli.test_cli import run

X, y = tabular(200)


@pytest.fixture
def deployed(client: Client) -> Client:
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20))
    client.upload_model("m", LogisticRegression(C=0.01).fit(X, y), sample=X.head(20))
    return client


def test_every_served_row_is_logged_with_its_provenance(deployed: Client) -> None:
    p = deployed.build_pipeline("p").add_shadow("m:1", {"small": "m:2"}).add_check("high", "out.score > 0.9")
    p.deploy()
    first = p.infer_with_metadata(X.head(5))
    p.infer(X.head(3))
    logs = p.logs()
    assert len(logs) == 8
    mine = logs[logs.request_id == first.request_id].sort_values("row")
    assert list(mine.row) == [0, 1, 2, 3, 4]
    assert set(mine.pipeline) == {"p"} and set(mine.pipeline_version) == {1} and set(mine.model_versions) == {"m:1"}
    np.testing.assert_allclose(mine.in_x0, X.x0.head(5))
    expected = deployed.model("m:1").predict(X.head(5))
    np.testing.assert_allclose(mine.out_score, expected.score)
    np.testing.assert_allclose(mine.shadow_small_score, deployed.model("m:2").predict(X.head(5)).score)
    assert list(mine.check_high) == list(expected.score > 0.9)
    assert (mine.latency_ms >= 0).all() and set(mine.status) == {"ok"}
    hourly = deployed.query(
        "SELECT date_trunc('hour', time) AS hour, count(*) AS n, avg(out_score) AS mean_score FROM logs GROUP BY 1"
    )
    assert int(hourly.n.sum()) == 8
    assert len(p.logs(limit=2, columns=["request_id", "out_score"]).columns) == 2
    assert p.logs(version=99).empty and deployed.build_pipeline("nope").logs().empty


def test_strict_durability_is_on_disk_before_the_answer_and_logging_can_be_off(deployed: Client) -> None:
    strict = deployed.build_pipeline("strict").add_model_step("m:1")
    strict.deploy()
    deployed.services.local.get("strict").current.config.durability = "strict"  # type: ignore[union-attr]
    strict.infer(X.head(4))
    journals = list((deployed.settings.home / "logs" / "_journal").glob("strict--*.arrows"))
    assert len(journals) == 1 and read_journal(journals[0]).table.num_rows == 4  # no flush was asked for
    quiet = deployed.build_pipeline("quiet").add_model_step("m:1")
    quiet.deploy()
    deployed.services.local.get("quiet").current.config.logging = False  # type: ignore[union-attr]
    quiet.infer(X.head(4))
    assert quiet.logs().empty


def test_batches_logged_together_keep_each_request_and_route(deployed: Client) -> None:
    p = deployed.build_pipeline("ab").add_split({"a": (0.5, "m:1"), "b": (0.5, "m:2")}, key="x0")
    p.deploy()
    loaded = deployed.services.local.get("ab").current
    served = [Served(loaded, loaded.run(loaded.conform(deployed_table(n)), log=False), 1_000 + n) for n in (3, 1, 4)]
    served[1].batch.requests[:] = 0
    table = log_table(served)
    ids = [i for s in served for i in s.batch.request_ids]
    assert table.column("request_id").to_pylist() == [ids[0]] * 3 + [ids[1]] + [ids[2]] * 4
    assert table.column("row").to_pylist() == [0, 1, 2, 0, 0, 1, 2, 3]
    routes = [r for s in served for r in s.batch.row_routes()]
    assert table.column("variant").to_pylist() == [v for v, _ in routes]
    assert table.column("model_versions").to_pylist() == [",".join(m) for _, m in routes]
    assert set(table.column("variant").to_pylist()) == {"a", "b"}
    np.testing.assert_allclose(table.column("in_x0").to_numpy(), np.r_[X.x0[:3], X.x0[:1], X.x0[:4]])


def test_string_columns_gather_any_values() -> None:
    index = np.array([2, 0, 2, 1])
    assert take_strings(["aa", "bb", "cc"], index).to_pylist() == ["cc", "aa", "cc", "bb"]
    assert take_strings(["a", "bbb", None], index).to_pylist() == [None, "a", None, "bbb"]
    assert take_strings([None], np.zeros(2, np.int64)).to_pylist() == [None, None]
    assert take_strings(["", ""], np.array([1, 0])).to_pylist() == ["", ""]
    assert take_strings(["é", "x"], np.array([0])).to_pylist() == ["é"]


def test_a_heavy_tick_goes_straight_to_parquet(deployed: Client, tmp_path: Path) -> None:
    p = deployed.build_pipeline("heavy").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("heavy").current
    writer = LogWriter(tmp_path / "logs", direct_rows=5, flush_interval_s=3600)  # this test persists by hand
    batches = [Served(loaded, loaded.run(loaded.conform(deployed_table(n)), log=False), 1_000) for n in (2, 4)]
    writer._append(batches, sync=False)
    assert not list((tmp_path / "logs" / "pipeline=heavy").rglob("*.parquet"))  # built, not on disk yet
    writer._persist()  # one second's rows: 6 >= 5, no journal
    assert "heavy" not in writer._open
    files = list((tmp_path / "logs" / "pipeline=heavy").rglob("*.parquet"))
    assert len(files) == 1 and pq.read_table(files[0]).num_rows == 6
    writer._append(batches[:1], sync=False)  # a light second is journaled
    writer._persist()
    assert writer._open["heavy"].rows == 2
    writer.close()


def test_served_batches_are_built_once_a_piece_waits_and_put_on_disk_each_flush(
    deployed: Client, tmp_path: Path
) -> None:
    p = deployed.build_pipeline("pieces").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("pieces").current
    writer = LogWriter(tmp_path / "logs", piece_rows=6, flush_interval_s=3600)

    def serve(n: int) -> None:
        writer(loaded, loaded.run(loaded.conform(deployed_table(n)), log=False))

    def settled(check) -> bool:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + 5
        while not check() and time.monotonic() < deadline:
            time.sleep(0.01)
        return bool(check())

    serve(2)
    serve(3)
    time.sleep(0.3)
    assert len(writer._handed) == 2 and not writer._built  # under a piece: left for the flush
    serve(1)  # a piece's worth: built now, not on disk until the flush
    assert settled(lambda: not writer._handed and writer._built)
    assert not list((tmp_path / "logs" / "pipeline=pieces").rglob("*.parquet"))
    serve(4)
    writer.flush()  # returns once everything handed over before it is on disk
    (part,) = (tmp_path / "logs" / "pipeline=pieces").rglob("*.parquet")
    assert pq.read_table(part).num_rows == 10 and not writer._built
    writer.close()


def test_a_heavy_tick_over_midnight_is_built_in_pieces_into_one_file_a_day(deployed: Client, tmp_path: Path) -> None:
    p = deployed.build_pipeline("night").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("night").current
    writer = LogWriter(tmp_path / "logs", direct_rows=5, piece_rows=3, flush_interval_s=3600)
    midnight = 1_700_006_400_000_000  # 2023-11-15 00:00 UTC
    batches = [
        Served(loaded, loaded.run(loaded.conform(deployed_table(n)), log=False), midnight + offset)
        for n, offset in ((2, -1), (2, 0), (3, 1), (1, 5))
    ]
    writer._append(batches, sync=False)
    writer._persist()
    day = {f.parent.name: pq.ParquetFile(f) for f in (tmp_path / "logs" / "pipeline=night").rglob("*.parquet")}
    assert sorted(day) == ["date=2023-11-14", "date=2023-11-15"]
    assert day["date=2023-11-14"].metadata.num_rows == 2 and day["date=2023-11-15"].metadata.num_rows == 6
    # Pieces of 3 rows or more: batches [2, 2] (across midnight), [3], [1]; a row group per piece and day.
    assert day["date=2023-11-15"].metadata.num_row_groups == 3
    ids = [i for s in batches for i in s.batch.request_ids]
    written = pa.concat_tables([day["date=2023-11-14"].read(), day["date=2023-11-15"].read()])
    assert written.column("request_id").to_pylist() == [ids[0]] * 2 + [ids[1]] * 2 + [ids[2]] * 3 + [ids[3]]
    assert not list((tmp_path / "logs" / "pipeline=night").rglob("*.tmp"))
    writer.close()


def test_failed_requests_are_logged_as_errors(deployed: Client) -> None:
    p = deployed.build_pipeline("p").add_model_step("m:1")
    p.deploy()
    p.infer(X.head(2))
    with pytest.raises(FinalmileError):
        p.infer(X.head(2).drop(columns=["x0"]))
    logs = p.logs()
    assert sorted(logs.status) == ["error", "ok", "ok"]
    error = logs[logs.status == "error"].iloc[0]
    assert "x0" in error.error and error.rows == 2 and error.pipeline_version == 1


def test_a_time_range_exports_to_parquet_and_csv(deployed: Client, tmp_path: Path) -> None:
    p = deployed.build_pipeline("p").add_model_step("m:1")
    p.deploy()
    p.infer(X.head(3))
    middle = datetime.now(UTC)
    time.sleep(0.01)
    p.infer(X.head(2))
    assert p.export_logs(tmp_path / "all.parquet") == 5
    assert p.export_logs(tmp_path / "late.csv", start=middle) == 2
    late = pd.read_csv(tmp_path / "late.csv")
    assert len(late) == 2 and list(late.row) == [0, 1]
    assert p.export_logs(tmp_path / "none.parquet", end=middle - timedelta(days=1)) == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def test_a_heavy_second_with_two_layouts_is_two_files(deployed: Client, tmp_path: Path) -> None:
    p = deployed.build_pipeline("mix").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("mix").current
    writer = LogWriter(tmp_path / "logs", direct_rows=1, flush_interval_s=3600)
    fp32 = pa.table({"input-0": tensor_array(X.head(2).to_numpy(np.float32))})
    tables = [fp32, deployed_table(3), fp32]  # float32 inputs, then float64, then float32 again
    writer._append([Served(loaded, loaded.run(loaded.conform(t), log=False), 1_000) for t in tables], sync=False)
    writer._persist()
    files = sorted((tmp_path / "logs" / "pipeline=mix").rglob("*.parquet"))
    assert sorted(pq.read_metadata(f).num_rows for f in files) == [3, 4]
    writer.close()


def test_columns_without_nulls_are_written_required_until_one_holds_a_null(deployed: Client, tmp_path: Path) -> None:
    p = deployed.build_pipeline("req").add_model_step("m:1")
    p.deploy()
    p.infer(X.head(3))
    deployed.services.logs.flush()
    (part,) = (deployed.settings.home / "logs" / "pipeline=req").rglob("*.parquet")
    schema = pq.read_schema(part)
    assert not schema.field("time").nullable and not schema.field("out_score").nullable
    assert schema.field("variant").nullable  # no A/B split: every row's variant is null
    split = deployed.build_pipeline("flip").add_split({"a": (1.0, "m:1")})
    split.deploy()
    split.infer(X.head(2))
    deployed.services.logs.flush()  # variant required in this file...
    deployed.build_pipeline("flip").add_model_step("m:1").deploy()
    split.infer(X.head(3))  # ...and optional in the next (no split, so null): the log reads both
    assert sorted(split.logs().variant.fillna("-")) == ["-", "-", "-", "a", "a"]
    parts = (deployed.settings.home / "logs" / "pipeline=flip").rglob("*.parquet")
    assert sorted(pq.read_schema(f).field("variant").nullable for f in parts) == [False, True]

    writer = LogWriter(tmp_path / "logs", flush_interval_s=3600)
    plain = pa.table({"a": [1.0, 2.0], "b": ["x", "y"]})
    assert [f.nullable for f in writer._required("q", plain).schema] == [False, False]
    holed = writer._required("q", pa.table({"a": [1.0, None], "b": ["x", "y"]}))
    assert [f.nullable for f in holed.schema] == [True, False] and holed.column("a").to_pylist() == [1.0, None]
    assert [f.nullable for f in writer._required("q", plain).schema] == [True, False]  # optional from then on
    assert [f.nullable for f in writer._required("other", plain).schema] == [False, False]  # per pipeline
    writer.close()


def _dead_writers_journal(
    deployed: Client, tmp_path: Path, pipeline: str, batches: int, rows: int, damage: Callable[[bytearray], None]
) -> tuple[LogWriter, bytes]:
    """`batches` strict batches of `rows` rows journaled by a writer whose process then died (so recovery may take
    the journal), its bytes damaged by `damage`; the writer, and the journal as left."""
    deployed.build_pipeline(pipeline).add_model_step("m:1").deploy()
    loaded = deployed.services.local.get(pipeline).current
    writer = LogWriter(tmp_path / "logs")
    for _ in range(batches):
        served = Served(loaded, loaded.run(loaded.conform(deployed_table(rows))), 1_700_000_000_000_000)
        writer._append([served], sync=True)
    path = writer._open[pipeline].path
    writer._open.pop(pipeline).file.close()  # as if the process died: nobody compacts it
    data = bytearray(path.read_bytes())
    damage(data)
    (path.parent / path.name.replace(f"--{os.getpid()}-", "--999999999-")).write_bytes(bytes(data))
    path.unlink()
    return writer, bytes(data)


def test_a_torn_journal_tail_is_skipped_and_reported(deployed: Client, tmp_path: Path) -> None:
    def tear(data: bytearray) -> None:  # a crash in the middle of the last batch
        del data[-40:]

    writer, _ = _dead_writers_journal(deployed, tmp_path, "torn", 3, 2, tear)
    recovered = LogWriter(tmp_path / "logs")
    assert recovered.recovery.rows == 4  # two complete batches of two rows
    assert recovered.recovery.torn and recovered.recovery.torn[0][1] > 0 and not recovered.recovery.corrupt
    files = list((tmp_path / "logs" / "pipeline=torn").rglob("*.parquet"))
    assert len(files) == 1 and not list((tmp_path / "logs" / "_journal").iterdir())
    recovered.close()
    writer.close()


@pytest.mark.parametrize("where", ["body", "header"])
def test_corruption_in_the_middle_of_a_journal_is_set_aside_and_told_never_dropped(
    deployed: Client, tmp_path: Path, where: str
) -> None:
    """300 acknowledged strict rows, 64 bytes overwritten in the middle, a crash: the restart kept 148 and deleted
    the journal as a 'torn tail'. Now every record that still checks is kept, the file is set aside and told."""

    def overwrite(data: bytearray) -> None:
        middle = len(data) // 2
        if where == "header":  # on a message's start: its metadata no longer parses
            middle = data.index(b"\xff\xff\xff\xff", middle)
        data[middle : middle + 64] = b"\x5a" * 64

    writer, left = _dead_writers_journal(deployed, tmp_path, "mid", 300, 1, overwrite)
    recovered = LogWriter(tmp_path / "logs")
    assert 296 <= recovered.recovery.rows < 300, recovered.recovery  # only the one or two records hit are lost
    assert not recovered.recovery.torn and len(recovered.recovery.corrupt) == 1
    assert set_aside_files(tmp_path / "logs") == recovered.recovery.corrupt
    assert (tmp_path / "logs" / "_corrupt" / recovered.recovery.corrupt[0]).read_bytes() == left
    assert not list((tmp_path / "logs" / "_journal").iterdir())
    recovered.close()
    writer.close()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="a zombie is told apart through /proc (Linux)")
def test_the_journal_of_a_writer_that_exited_unreaped_is_recovered(deployed: Client, tmp_path: Path) -> None:
    # A server's worker outlives its killed supervisor and exits; an init that does not reap (this machine's, many
    # containers') leaves it a zombie, which answers signal 0 like a live process: its journal waited forever.
    p = deployed.build_pipeline("zombie").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("zombie").current
    writer = LogWriter(tmp_path / "logs")
    writer._append([Served(loaded, loaded.run(loaded.conform(deployed_table(3))), 1_700_000_000_000_000)], sync=True)
    journal = writer._open.pop("zombie")
    journal.close()
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{exited.pid}/stat").read_text().split()[2] != "Z":
        time.sleep(0.05)  # exited, and not waited for: a zombie until `wait()`
    try:
        journal.path.rename(journal.path.parent / journal.path.name.replace(f"--{os.getpid()}-", f"--{exited.pid}-"))
        recovered = LogWriter(tmp_path / "logs")
        assert recovered.recovery.rows == 3 and not list((tmp_path / "logs" / "_journal").iterdir())
        recovered.close()
    finally:
        exited.wait()
    writer.close()


def deployed_table(n: int):  # type: ignore[no-untyped-def]
    return pa.Table.from_pandas(X.head(n), preserve_index=False)


def test_inputs_are_logged_in_the_float_type_they_were_served_in(deployed: Client) -> None:
    p = deployed.build_pipeline("fp32").add_model_step("m:1")
    p.deploy()
    loaded = deployed.services.local.get("fp32").current
    values = X.head(3).to_numpy(np.float32)  # how a V2 client sends rows: one FP32 tensor
    loaded.run(loaded.conform(pa.table({"input-0": tensor_array(values)})))
    deployed.services.logs.flush()
    (part,) = (deployed.settings.home / "logs" / "pipeline=fp32").rglob("*.parquet")
    assert pq.read_schema(part).field("in_x0").type == pa.float32()  # not widened to the schema's float64
    loaded.run(loaded.conform(deployed_table(2)))  # named float64 columns: logged as float64
    logged = deployed.query("SELECT in_x0, typeof(in_x0) AS type FROM logs WHERE pipeline = 'fp32' ORDER BY time")
    assert set(logged.type) == {"DOUBLE"}  # one column type for the reader, whatever each part holds
    np.testing.assert_array_equal(logged.in_x0, np.r_[values[:, 0].astype(np.float64), X.x0[:2]])


def test_queries_are_read_only_and_errors_say_where(deployed: Client) -> None:
    for sql in ("DROP TABLE logs", "CREATE TABLE x (a INT)", "INSERT INTO models VALUES ('a', 1, 1)"):
        with pytest.raises(FinalmileError, match="read-only"):
            deployed.query(sql)
    with pytest.raises(FinalmileError, match="syntax error at or near"):
        deployed.query("SELEC 1")
    assert list(deployed.query("SELECT * FROM logs").columns)[:3] == ["time", "request_id", "row"]
    assert deployed.query("SELECT name, latest FROM models").set_index("name").latest["m"] == 2


def test_cli_query_and_logs(
    deployed: Client, cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    p = deployed.build_pipeline("p").add_model_step("m:1")
    p.deploy()
    p.infer(X.head(3))
    deployed.services.logs.flush()
    home = deployed.settings.home
    monkeypatch.setenv("FINALMILE_HOME", str(home))
    monkeypatch.setenv("FINALMILE_DATABASE_URL", deployed.settings.resolved_database_url())
    code, out, _ = run(capsys, "query", "SELECT count(*) AS n FROM logs", "--format", "json")
    assert code == 0 and json.loads(out.strip()) == {"n": 3}
    code, out, _ = run(
        capsys, "query", "SELECT request_id, out_score FROM logs", "--output", str(cli_env / "q.parquet")
    )
    assert code == 0 and "wrote 3 rows" in out
    code, out, _ = run(capsys, "logs", "p", "--since", "1h", "--columns", "row,out_score")
    assert code == 0 and "out_score" in out
    code, out, _ = run(capsys, "logs", "p", "--since", "1h", "--output", str(cli_env / "range.jsonl"))
    assert code == 0 and "wrote 3 rows" in out and len((cli_env / "range.jsonl").read_text().splitlines()) == 3
    code, _, err = run(capsys, "query", "DELETE FROM logs")
    assert code == 1 and "read-only" in err and "Traceback" not in err
    ids = deployed.query("SELECT DISTINCT request_id FROM logs").request_id
    import pandas as pd

    pd.DataFrame({"request_id": list(ids) + ["stranger"], "is_fraud": [1] * (len(ids) + 1)}).to_csv(
        cli_env / "labels.csv", index=False
    )
    code, out, _ = run(capsys, "ground-truth", "p", str(cli_env / "labels.csv"))
    assert code == 0 and "2 labels: 1 keys matched the log, 1 unknown" in out
    code, _, err = run(capsys, "logs", "p", "--since", "yesterday")
    assert code == 1 and "expected a number and a unit" in err


def test_retention_removes_old_partitions_only(deployed: Client) -> None:
    root = deployed.settings.home / "logs" / "pipeline=p"
    for date in ("2020-01-01", "2099-01-01"):
        (root / f"date={date}").mkdir(parents=True)
        (root / f"date={date}" / "part-0.parquet").write_bytes(b"")
    assert deployed.services.logs.expire("p", days=30) == ["2020-01-01"]
    assert [p.name for p in root.iterdir()] == ["date=2099-01-01"]


def test_the_last_kafka_offset_logged_per_partition_is_read_from_request_ids(deployed: Client) -> None:
    for name in ("p", "q"):
        deployed.build_pipeline(name).add_model_step("m:1").deploy()
    ids = {"p": ["orders-0-5", "orders-0-12", "orders-0-9", "orders-1-3", "orders-x-2", "orders-0-1-7", "other-0-99"]}
    ids["q"] = ["orders-0-50"]  # another pipeline's log

    async def infer_all() -> None:
        for name, request_ids in ids.items():
            for request_id in request_ids:
                request = InferRequest(name, pa.Table.from_pandas(X.head(1)), None, True, request_id)
                await deployed.services.dataplane.infer(request)

    asyncio.run(infer_all())
    reader = deployed.services.reader
    assert reader.last_offsets("p", "orders") == {0: 12, 1: 3}  # numerically highest; other shapes ignored
    assert reader.last_offsets("p", "orders-0") == {1: 7}  # a topic named "orders-0" is its own
    assert reader.last_offsets("p", "nothing") == {}


def test_a_durable_batch_stays_journaled_and_the_redelivery_lookups_read_every_journal(deployed: Client) -> None:
    # A stream acknowledges a batch once its rows are durable. Compacting there too made a Parquet part per batch
    # (per message, at a message a second); the lookups that recognise a redelivered message read journals instead.
    deployed.build_pipeline("a--b").add_model_step("m:1").deploy()  # a name holding "--", as journal names do
    loaded = deployed.services.local.get("a--b").current
    root = deployed.services.reader.home / "logs"
    other = LogWriter(root)  # another worker's writer, in effect: this client's flushes never compact its journal
    other(loaded, loaded.run(loaded.conform(deployed_table(3)), log=False, ids=["orders-0-5"]))
    other.durable()
    assert not list(root.glob("pipeline=a--b/*/*.parquet")) and len(list((root / "_journal").iterdir())) == 1
    reader = deployed.services.reader
    assert reader.logged_ids("a--b", ["orders-0-5", "orders-0-6"]) == {"orders-0-5"}
    assert reader.last_offsets("a--b", "orders") == {0: 5}
    assert reader.logged_ids("a", ["orders-0-5"]) == set()  # pipeline "a" is not "a--b"
    starting = LogWriter(root)  # another process starting: a live writer's journal is its own (it was taken as
    assert starting.recovery.rows == 0  # pipeline "a"'s, from a process "b" that did not exist, before)
    starting.close()
    other.close()  # compacts: the same answers from the Parquet part
    assert len(list(root.glob("pipeline=a--b/*/*.parquet"))) == 1
    assert reader.logged_ids("a--b", ["orders-0-5"]) == {"orders-0-5"}


def test_a_query_result_pandas_has_no_column_for_still_comes_back(client: Client) -> None:
    """A union (DuckDB's `union_value`) has no pandas equivalent: it comes back as text, the rest as it is."""
    result = client.query("SELECT union_value(k := 7) AS u, 2 AS n, [1.5] AS l")
    assert (result.u[0], result.n[0], list(result.l[0])) == ("7", 2, [1.5])


def test_a_flush_racing_the_close_returns_instead_of_waiting_forever(tmp_path: Path) -> None:
    # A stream's last flush may hand its marker over just after the writer's thread took its last look, as the
    # server closes: the flush then waited on a marker nobody would ever set, and the process never exited.
    writer = LogWriter(tmp_path / "logs")
    thread = writer._thread

    class LooksAliveOnce:
        looked = False

        def is_alive(self) -> bool:
            first, self.looked = not self.looked, True
            return first or thread.is_alive()

    writer._handed.append(None)  # the close's stop marker: the thread drains it and ends
    writer._wake.set()
    thread.join(5)
    writer._thread = LooksAliveOnce()  # type: ignore[assignment]  # the flush still sees it alive, as in the race
    started = time.monotonic()
    writer.flush()
    assert time.monotonic() - started < 5


def test_while_tracing_is_on_sampled_and_unsampled_batches_share_one_journal(
    deployed: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sampled request's rows name its trace; an unsampled one's hold a null in the same column, so the journal's
    schema never changes with the sampler's draws (each change sealed the journal as a Parquet part)."""
    from finalmile import tracing

    deployed.build_pipeline("traced").add_model_step("m:1").deploy()
    loaded = deployed.services.local.get("traced").current
    writer = LogWriter(tmp_path / "logs", flush_interval_s=3600)
    monkeypatch.setattr(tracing, "_sink", False)  # on, exporting nothing (`OTEL_TRACES_EXPORTER=none`)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    for sampled in (False, True, False, False, True):
        served = Served(loaded, loaded.run(loaded.conform(deployed_table(2)), log=False), 1_700_000_000_000_000)
        served.batch.trace_ids = [trace] if sampled else None
        writer._append([served], sync=True)  # journaled at once, each its own piece
    journal = writer._open["traced"]
    assert journal.rows == 10 and not list((tmp_path / "logs").rglob("*.parquet"))  # one journal, never sealed
    writer.close()
    (part,) = (tmp_path / "logs" / "pipeline=traced").rglob("*.parquet")
    assert pq.read_table(part).column("trace_id").to_pylist() == [None, None, trace, trace] + [None] * 4 + [trace] * 2
