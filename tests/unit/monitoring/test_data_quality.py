"""Data-quality monitors over a log the test wrote: each window's share of nulls, out-of-range values, unseen
categories and values of another type, counted here by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import InvalidInputError
from finalmile.monitoring.config import MonitorConfig
from finalmile.monitoring.kinds.quality import DataQualityKind
from tests.fixtures import tabular

X, y = tabular(200)
T0 = datetime(2026, 11, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
COUNTRIES = pd.DataFrame({"country": ["FR", "DE", "IT"] * 10})


@pytest.fixture
def logged(client: Client) -> Client:
    """Pipeline `p` reading `in.country` in a check; hour 0: clean rows; hour 1: x0 far out of range on 10 rows,
    an unknown country on 20 and no country on 5 of 100."""
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(50))
    client.build_pipeline("p").add_model_step("m:1").add_check("foreign", "in.country != 'FR'").deploy()
    rows = []
    for hour in (0, 1):
        for i in range(100):
            country = ["FR", "DE", "IT"][i % 3]
            x0 = float(np.sin(i))
            if hour == 1 and i < 10:
                x0 = 50.0
            if hour == 1 and 10 <= i < 30:
                country = "XX"
            if hour == 1 and 30 <= i < 35:
                country = None
            rows.append(
                {
                    "time": T0 + hour * HOUR + timedelta(seconds=30 * i),
                    "request_id": f"r{hour}-{i}",
                    "row": 0,
                    "pipeline_version": 1,
                    "status": "ok",
                    "in_x0": x0,
                    "in_country": country,
                    "out_score": 0.5,
                }
            )
    table = pa.Table.from_pylist(rows)
    table = table.set_column(0, "time", table.column("time").cast(pa.timestamp("us", tz="UTC")))
    directory = client.settings.home / "logs" / "pipeline=p" / "date=2026-11-01"
    directory.mkdir(parents=True)
    pq.write_table(table, directory / "part-0.parquet")
    return client


def test_nulls_out_of_range_and_unseen_categories_per_window(logged: Client) -> None:
    def scores(name: str, column: str, check: str, baseline: object = None) -> list[float]:
        monitor = logged.build_monitor(name, "p", "data_quality", column=column, check=check, window="1h",
                                       alert=0.1, baseline=baseline)  # fmt: skip
        return list(monitor.preview(T0, T0 + 2 * HOUR).score)

    assert scores("nulls", "country", "null_rate") == [0.0, pytest.approx(5 / 100)]
    assert scores("range", "x0", "out_of_range", X) == [0.0, pytest.approx(10 / 100)]
    assert scores("unseen", "in_country", "unseen_category", COUNTRIES) == [0.0, pytest.approx(20 / 95)]
    unseen = logged.build_monitor("unseen2", "p", "data_quality", column="country", check="unseen_category",
                                  window="1h", alert=0.1, baseline=(T0, T0 + HOUR))  # fmt: skip
    result = unseen.preview(T0 + HOUR, T0 + 2 * HOUR)
    assert list(result.status) == ["alert"] and result.evidence[0]["examples"] == ["XX"]


def test_a_type_change_is_the_share_of_values_of_another_type_than_the_baseline() -> None:
    config = MonitorConfig(name="t", pipeline="p", kind="data_quality", metric="type_change", column="in_age")
    table = pa.table({"value": pa.array(["31", "forty", None, "52"])})
    score, evidence = DataQualityKind().score(config, table, np.arange(4), np.array([31.0, 45.0, 52.0]))
    assert score == pytest.approx(1.0) and evidence["expected"] == "number" and evidence["offending"] == 3
    same = pa.table({"value": pa.array([1.0, 2.0, None])})
    assert DataQualityKind().score(config, same, np.arange(3), np.array([31.0]))[0] == 0.0
    for baseline, expected in [
        (["a", None, "b"], "text"),
        ([True, False, None], "boolean"),
        ([1, 2.5, None], "number"),
        (["a", 1, 2], "number"),  # mixed: the kind most values have
        ([None, None], "text"),
    ]:
        kept = np.array(baseline, dtype=object)
        assert DataQualityKind().score(config, same, np.arange(3), kept)[1]["expected"] == expected, baseline


@pytest.mark.parametrize(
    ("logged_values", "baseline"),
    [
        (pa.array([1, 2, 3, 4, None]), np.array([1.0, 2.0, 3.0, np.nan])),  # integer codes (a frame's are floats)
        (pa.array([1.0, 2.5, 3.0, 4.0, None]), np.array([1.0, 2.5, 3.0])),
        (pa.array(["a", "b", "c", "d", None]), np.array(["a", "b", "c", None], dtype=object)),
        (pa.array(["1", "b", "c", "d", None]), np.array([1, "b", "c"], dtype=object)),  # mixed: value by value
    ],
)
def test_an_unseen_category_is_one_the_baseline_never_had_whatever_its_type(
    logged_values: pa.Array, baseline: np.ndarray
) -> None:
    config = MonitorConfig(name="u", pipeline="p", kind="data_quality", metric="unseen_category", column="in_code")
    score, evidence = DataQualityKind().score(config, pa.table({"value": logged_values}), np.arange(5), baseline)
    assert score == pytest.approx(1 / 4) and evidence["categories"] == 3 and evidence["offending"] == 1
    flags = pa.table({"value": pa.array([True, True, False])})
    seen = np.array([True], dtype=object)
    assert DataQualityKind().score(config, flags, np.arange(3), seen)[0] == pytest.approx(1 / 3)


def test_a_data_quality_monitor_names_what_is_wrong(logged: Client) -> None:
    with pytest.raises(InvalidInputError, match="check: unknown data-quality check 'nan_rate'"):
        logged.build_monitor("q", "p", "data_quality", column="country", check="nan_rate")
    with pytest.raises(InvalidInputError, match="baseline: the out_of_range check compares with a baseline"):
        logged.build_monitor("q", "p", "data_quality", column="x0", check="out_of_range")
    with pytest.raises(InvalidInputError, match="check: only a data_quality monitor takes a check"):
        logged.build_monitor("q", "p", "error_rate", check="null_rate")
