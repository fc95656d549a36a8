"""Ground truth joins the log in SQL, by request id or by a logged key column; the newest label wins."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import InvalidInputError
from tests.fixtures import tabular

X, y = tabular(200)


@pytest.fixture
def pipeline(client: Client):  # type: ignore[no-untyped-def]
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    p = client.build_pipeline("p").add_model_step("m:1").add_check("any", "in.txn != ''")
    p.deploy()
    return p


def test_labels_by_request_id_join_and_the_newest_wins(client: Client, pipeline) -> None:  # type: ignore[no-untyped-def]
    ids = [pipeline.infer_with_metadata(X.iloc[[i]].assign(txn=f"t{i}")).request_id for i in range(20)]
    truth = pd.DataFrame({"request_id": ids, "is_fraud": y.head(20).to_numpy()})
    receipt = pipeline.add_ground_truth(pd.concat([truth, pd.DataFrame({"request_id": ["nope"], "is_fraud": [1]})]))
    assert (receipt.received, receipt.matched, receipt.unknown) == (21, 20, 1)
    accuracy = client.query(
        "SELECT avg(CAST(l.out_label = g.is_fraud AS DOUBLE)) AS accuracy, count(*) AS n "
        "FROM logs l JOIN ground_truth g ON g.key = l.request_id AND g.pipeline = l.pipeline"
    )
    expected = (client.model("m:1").predict(X.head(20)).label.to_numpy() == y.head(20).to_numpy()).mean()
    assert accuracy.n[0] == 20 and accuracy.accuracy[0] == pytest.approx(expected)
    # A late correction: flip the first label; the view shows only the newest.
    pipeline.add_ground_truth(pd.DataFrame({"request_id": [ids[0]], "is_fraud": [1 - int(y.iloc[0])]}))
    label = client.query(f"SELECT is_fraud FROM ground_truth WHERE key = '{ids[0]}'")
    assert list(label.is_fraud) == [1 - int(y.iloc[0])]


def test_labels_by_a_logged_key_column(client: Client, pipeline) -> None:  # type: ignore[no-untyped-def]
    pipeline.infer(X.head(5).assign(txn=[f"t{i}" for i in range(5)]))
    receipt = pipeline.add_ground_truth(pd.DataFrame({"txn": ["t0", "t1", "zz"], "is_fraud": [1, 0, 1]}), key="txn")
    assert (receipt.matched, receipt.unknown) == (2, 1)
    joined = client.query("SELECT l.in_txn, g.is_fraud FROM logs l JOIN ground_truth g ON g.key = l.in_txn ORDER BY 1")
    assert list(joined.in_txn) == ["t0", "t1"]
    with pytest.raises(InvalidInputError, match="column 'order' \\(the key\\) is missing"):
        pipeline.add_ground_truth(pd.DataFrame({"txn": ["t0"]}), key="order")
    with pytest.raises(InvalidInputError, match="no label columns"):
        pipeline.add_ground_truth(pd.DataFrame({"txn": ["t0"]}), key="txn")


def test_labels_that_cannot_be_read_with_earlier_ones_are_refused_and_the_view_stays_readable(
    client: Client,
    pipeline,  # type: ignore[no-untyped-def]
) -> None:
    ids = [pipeline.infer_with_metadata(X.iloc[[i]].assign(txn=f"t{i}")).request_id for i in range(3)]
    pipeline.add_ground_truth(pd.DataFrame({"request_id": ids[:1], "is_fraud": [1], "note": ["late"]}))
    pipeline.add_ground_truth(pd.DataFrame({"request_id": ids[1:2], "is_fraud": [0.5], "note": [None]}))  # unifies
    folder = client.services.reader.home / "ground_truth" / "pipeline=p"
    parts = sorted(folder.iterdir())
    with pytest.raises(
        InvalidInputError, match="column 'is_fraud' holds struct<a: int64> here and double in this pipeline's earlier"
    ) as refused:
        pipeline.add_ground_truth(pa.table({"request_id": ids[2:], "is_fraud": [{"a": 1}]}))
    assert refused.value.detail == {"field": "is_fraud"}
    assert sorted(folder.iterdir()) == parts  # nothing left behind, not even the refused upload's temporary file
    labels = client.query("SELECT key, is_fraud, note FROM ground_truth ORDER BY is_fraud")
    assert list(labels.is_fraud) == [0.5, 1.0] and list(labels.note.fillna("-")) == ["-", "late"]
    pipeline.add_ground_truth(pd.DataFrame({"request_id": ids[2:], "score_band": [{"a": 1}]}))  # a new column: any
    assert client.query("SELECT count(*) AS n FROM ground_truth").n[0] == 3


def test_labels_by_a_numeric_key_match_as_numbers_in_every_join(client: Client, pipeline) -> None:  # type: ignore[no-untyped-def]
    """A key column logged as numbers is matched as a number, however the labels write it ("1.50", 1.5), the same in
    the upload's receipt, a performance monitor and the dashboard's accuracy (one rule: `key_matches`)."""
    from datetime import UTC, datetime, timedelta

    from finalmile.dashboard import queries

    ordered = client.build_pipeline("q").add_model_step("m:1").add_check("big", "in.order > 3.5")
    ordered.deploy()
    ordered.infer(X.head(4).assign(order=[1.5, 2.25, 3.0, 4.0]))
    predicted = list(client.query("SELECT out_label FROM logs ORDER BY in_order").out_label)
    labels = pd.DataFrame(
        {"order": ["1.50", "2.25", "3", "9.5"], "is_fraud": [predicted[0], predicted[1], 1 - predicted[2], 1]}
    )
    receipt = ordered.add_ground_truth(labels, key="order")
    assert (receipt.matched, receipt.unknown) == (3, 1)
    now = datetime.now(UTC)
    monitor = client.build_monitor("acc", "q", "performance", metric="accuracy", label="is_fraud", window="1h")
    result = monitor.preview(now - timedelta(minutes=30), now + timedelta(minutes=30))
    assert result.score.iloc[-1] == pytest.approx(2 / 3)
    reader = client.services.reader
    with reader.connection() as conn:
        figures = queries.pipeline_figures(conn, reader, "q", now)
    assert [v for by in figures.accuracy.values() for v in by] == [pytest.approx(2 / 3)]
