"""Pipelines in-process: versions that pin models, A/B splits, key stickiness, shadows, checks, YAML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import FinalmileError, SchemaError, VersionPinnedError
from finalmile.pipelines.batch import Batch, Sequence
from finalmile.pipelines.routing import SplitStep
from tests.fixtures import ErrorModel, SumModel, tabular

X, y = tabular(200)


@pytest.fixture
def models(client: Client) -> Client:
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(20), alias="champion")
    client.upload_model("m", LogisticRegression(C=0.001).fit(X, y), sample=X.head(20), alias="challenger")
    return client


def test_versions_pin_exact_model_versions_and_protect_them(models: Client) -> None:
    p = models.build_pipeline("fraud").add_model_step("m@champion")
    first = p.create_version()
    assert first.version == 1 and first.spec["steps"][0]["model"] == "m:1"
    assert p.create_version().version == 1  # nothing changed: no new version
    models.set_alias("m", 2, "champion")
    assert models.build_pipeline("fraud").add_model_step("m@champion").create_version().version == 2
    with pytest.raises(VersionPinnedError, match="pipeline 'fraud' version 1"):
        models.delete_alias("m", "champion") or models.delete_model_version("m", 1)
    assert [v.version for v in models.pipeline("fraud").versions()] == [1, 2]


def test_deploy_and_infer_in_process_matches_the_model(models: Client) -> None:
    p = models.build_pipeline("fraud").add_model_step("m:1").add_check("confident", "out.score > 0.9")
    p.deploy()
    out = p.infer(X.head(10))
    expected = models.model("m:1").predict(X.head(10))
    pd.testing.assert_frame_equal(out, expected)
    result = p.infer_with_metadata(X.head(10))
    meta = result.metadata()
    assert meta["pipeline_version"] == 1 and meta["model_versions"] == [["m:1"]] * 10
    assert meta["checks"]["confident"] == list(expected.score > 0.9)


def test_a_sync_that_read_the_store_before_a_deploy_does_not_undo_it(
    models: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, manager = models.services.pipelines, models.services.local
    read = store.deployments
    p = models.build_pipeline("fraud").add_model_step("m:1")
    change = p.deploy

    def read_then_change():  # type: ignore[no-untyped-def]
        records = read()
        change()  # lands after the sync's read of the store, before the sync acts on it
        return records

    monkeypatch.setattr(store, "deployments", read_then_change)
    manager.sync()  # read: nothing deployed; then `fraud` is deployed; the sync must not undeploy it
    assert "fraud" in manager.slots and p.infer(X.head(2)).shape[0] == 2

    change = p.undeploy
    manager.sync()  # read: `fraud` deployed; then undeployed; the sync must not bring it back
    assert "fraud" not in manager.slots
    monkeypatch.setattr(store, "deployments", read)
    manager.sync()
    assert "fraud" not in manager.slots


def test_weighted_split_holds_over_ten_thousand_requests(models: Client) -> None:
    p = models.build_pipeline("ab").add_split({"a": (0.8, "m:1"), "b": (0.2, "m:2")})
    p.deploy()
    row = X.head(1)
    variants = [p.infer_with_metadata(row).metadata()["variant"][0] for _ in range(10_000)]
    share = variants.count("b") / len(variants)
    # 0.2 ± 4 standard deviations (sd = sqrt(0.2·0.8/10,000) = 0.004)
    assert abs(share - 0.2) < 0.016
    result = p.infer_with_metadata(X.head(50))
    assert len(set(result.metadata()["variant"])) == 1  # one draw per request


def test_keyed_split_is_sticky_and_per_row(models: Client) -> None:
    p = models.build_pipeline("keyed").add_split({"a": (0.5, "m:1"), "b": (0.5, "m:2")}, key="customer")
    p.deploy()
    frame = X.head(40).assign(customer=[f"c{i % 10}" for i in range(40)])
    first = p.infer_with_metadata(frame).metadata()
    second = p.infer_with_metadata(frame.iloc[::-1]).metadata()
    by_customer = {}
    for customer, variant, models_used in zip(frame.customer, first["variant"], first["model_versions"], strict=True):
        assert by_customer.setdefault(customer, variant) == variant
        assert models_used == (["m:1"] if variant == "a" else ["m:2"])
    assert set(by_customer.values()) == {"a", "b"}
    assert second["variant"] == first["variant"][::-1]
    # Rows come back in their original order whatever variant they went through.
    out = p.infer(frame)
    native_a, native_b = models.model("m:1").predict(X.head(40)), models.model("m:2").predict(X.head(40))
    expected = np.where(np.array(first["variant"]) == "a", native_a.score, native_b.score)
    np.testing.assert_allclose(out.score, expected)
    with pytest.raises(SchemaError, match="column 'customer': missing"):
        p.infer(X.head(2))


def test_split_assignment_by_hash_is_stable_across_instances() -> None:
    keys = pd.DataFrame({"k": [f"user-{i}" for i in range(1000)]})
    import pyarrow as pa

    batch = Batch.start(pa.Table.from_pandas(keys))
    one = SplitStep([("a", 1.0, Sequence([])), ("b", 3.0, Sequence([]))], key="k").assign(batch)
    two = SplitStep([("a", 1.0, Sequence([])), ("b", 3.0, Sequence([]))], key="k").assign(batch)
    assert (one == two).all()
    assert 0.65 < one.mean() < 0.85  # ~75% to "b"


def test_shadow_outputs_reach_the_hook_and_a_failing_challenger_does_not_fail(models: Client) -> None:
    models.upload_model("broken", ErrorModel)
    seen = []
    models.services.local.hooks.append(lambda loaded, batch: seen.append(batch))
    p = models.build_pipeline("shadowed").add_shadow("m:1", {"good": "m:2", "bad": "broken"})
    p.deploy()
    out = p.infer(X.head(5))
    pd.testing.assert_frame_equal(out, models.model("m:1").predict(X.head(5)))
    batch = seen[-1]
    assert set(batch.shadow) == {"good"}
    np.testing.assert_allclose(
        batch.shadow["good"].column("score").to_numpy(), models.model("m:2").predict(X.head(5)).score
    )
    assert "this model always fails" in batch.errors["shadow:bad"]


def test_transform_steps_and_yaml(models: Client, tmp_path: Path) -> None:
    p = models.build_pipeline("pre").add_transform_step(SumModel).add_check("big", "out.total > 1")
    p.deploy()
    out = p.infer(pd.DataFrame({"a": [1.0, 0.1], "b": [2.0, 0.2]}))
    assert list(out.total) == pytest.approx([3.0, 0.3])
    (tmp_path / "p.yaml").write_text(
        "name: from-yaml\nsteps:\n  - model: m@champion\n"
        "  - kind: check\n    name: high\n    expression: out.score > 0.99\n"
    )
    applied = models.apply_pipeline(tmp_path / "p.yaml", deploy=True)
    assert applied.infer(X.head(3)).shape == (3, 3)
    (tmp_path / "bad.yaml").write_text("name: x\nsteps:\n  - kind: teleport\n")
    with pytest.raises(FinalmileError, match="invalid pipeline definition"):
        models.apply_pipeline(tmp_path / "bad.yaml")
    with pytest.raises(FinalmileError, match="only in.<column>"):
        models.build_pipeline("x").add_model_step("m:1").add_check("evil", "__import__('os')").create_version()


def test_extra_and_missing_inputs_are_refused_per_request(models: Client) -> None:
    p = models.build_pipeline("strict").add_model_step("m:1")
    p.deploy()
    with pytest.raises(SchemaError, match="column 'surprise': unexpected input"):
        p.infer(X.head(2).assign(surprise=1))
    with pytest.raises(SchemaError, match="column 'x0': missing"):
        p.infer(X.head(2).drop(columns=["x0"]))
    with pytest.raises(FinalmileError, match="empty batch"):
        p.infer(X.head(0))


def test_a_column_only_a_check_reads_must_be_plain_so_the_log_stays_readable(models: Client) -> None:
    """Such a column has no schema: it is logged as each request sends it, and DuckDB reads every request's part of
    the log as one table, so a list after text would fail every later query of the log."""
    p = models.build_pipeline("flagged").add_model_step("m:1").add_check("tagged", "in.txn != ''")
    p.deploy()
    for value in ("t1", 7, 2.5, True, None):
        p.infer(X.head(1).assign(txn=[value]))
    for value, kind in (([1, 2], "list<item: int64>"), ({"a": 1}, "struct<a: int64>"), (b"\xff", "binary")):
        with pytest.raises(SchemaError, match=f"column 'txn': expected text, a number or a boolean, got {kind}"):
            p.infer(pd.DataFrame({**X.head(1).to_dict("list"), "txn": [value]}))
    models.services.logs.flush()
    logged = models.query("SELECT count(*) AS n, count(in_txn) AS sent FROM logs WHERE pipeline = 'flagged'")
    assert (logged.n[0], logged.sent[0]) == (8, 4)  # 5 served (one txn null) and 3 refused, every row readable


def test_named_tensor_inputs_are_reordered_to_the_model_columns(models: Client) -> None:
    from finalmile.arrow.tensors import named_tensor

    p = models.build_pipeline("named").add_model_step("m:1")
    p.deploy()
    loaded = models.services.local.get("named").current
    reordered = X.head(4)[list(reversed(X.columns))]
    table = loaded.conform(named_tensor(reordered.to_numpy(), list(reordered.columns)))
    out = loaded.split(loaded.run(table), [(0, 4)])[0].table
    np.testing.assert_allclose(out.column("score").to_numpy(), models.model("m:1").predict(X.head(4)).score)
    with pytest.raises(SchemaError, match="column 'x0': missing"):
        loaded.conform(named_tensor(X.head(2).drop(columns=["x0"]).to_numpy(), list(X.columns[1:])))
