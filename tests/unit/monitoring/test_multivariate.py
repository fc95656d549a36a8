"""Multivariate drift: a change in how two columns move together, which neither column's own PSI shows, fires both
the PCA reconstruction error and the domain classifier; traffic like the baseline does not; bad input is refused
naming the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile.errors import InvalidInputError


def _rows(n: int, rho: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=n)
    x1 = rho * x0 + np.sqrt(1 - rho**2) * rng.normal(size=n)  # the same N(0, 1) marginal whatever rho
    return pd.DataFrame({"x0": x0, "x1": x1, "x2": rng.normal(size=n), "x3": rng.normal(size=n)})


def _serve(client, name: str, rows: pd.DataFrame) -> None:  # type: ignore[no-untyped-def]
    client.build_pipeline(name).add_model_step("m:1").deploy()
    for start in range(0, len(rows), 200):
        client.pipeline(name).infer(rows.iloc[start : start + 200])


def test_a_correlation_change_fires_what_single_column_psi_misses(client) -> None:  # type: ignore[no-untyped-def]
    baseline = _rows(4000, 0.9, seed=1)
    client.upload_model("m", LogisticRegression().fit(baseline, baseline.x0 > 0), sample=baseline.head(50))
    _serve(client, "flipped", _rows(2000, -0.9, seed=2))
    _serve(client, "calm", _rows(2000, 0.9, seed=3))
    now = datetime.now(UTC) + timedelta(seconds=1)

    def one_window(monitor):  # type: ignore[no-untyped-def]
        (result,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
        return result

    for column in ("x0", "x1"):  # each column alone looks the same
        psi = one_window(client.build_assay(f"psi-{column}", "flipped", column, baseline=baseline, window="1h"))
        assert psi.score < 0.1, (column, psi.score)
    for method in ("pca", "classifier"):
        fired = client.build_monitor(f"{method}-f", "flipped", "multivariate_drift", columns=["x0", "x1", "x2", "x3"],
                                     method=method, baseline=baseline, window="1h")  # fmt: skip
        quiet = client.build_monitor(f"{method}-c", "calm", "multivariate_drift", columns=["x0", "x1", "x2", "x3"],
                                     method=method, baseline=baseline, window="1h")  # fmt: skip
        assert fired.config.columns == ["in_x0", "in_x1", "in_x2", "in_x3"]
        flipped, calm = one_window(fired), one_window(quiet)
        assert (flipped.status, calm.status) == ("alert", "ok"), (method, flipped, calm)
        if method == "pca":
            assert calm.evidence["lower"] <= calm.score <= calm.evidence["upper"] < flipped.score
            assert fired.config.alert == pytest.approx(calm.evidence["upper"])  # the baseline's own band
        else:
            assert flipped.score > 0.8 and calm.score < 0.6
    stored = sorted((client.settings.home / "artifacts" / "sha256").rglob("*"))
    saved = client.build_monitor("saved", "flipped", "multivariate_drift", columns=["x0", "x1"],
                                 baseline=(now - timedelta(hours=1), now), window="1h")  # fmt: skip
    assert saved.config.baseline.kind == "frame"  # a log range, read once and kept
    before = one_window(saved)
    assert sorted((client.settings.home / "artifacts" / "sha256").rglob("*")) == stored  # previews store nothing
    saved.save()
    assert saved.config.baseline.artifact is not None  # stored once saved
    assert [m.name for m in client.monitors()] == ["saved"]
    again = one_window(client.monitor("saved"))  # a new handle: the reference read back from the store
    assert again.score == pytest.approx(before.score) and again.status == before.status


def test_bad_input_names_the_field_and_stores_nothing(client) -> None:  # type: ignore[no-untyped-def]
    baseline = _rows(500, 0.9, seed=1)
    client.upload_model("m", LogisticRegression().fit(baseline, baseline.x0 > 0), sample=baseline.head(50))
    _serve(client, "p", baseline.head(100))
    for options, said in [
        ({"columns": ["x0"], "baseline": baseline}, "columns: a multivariate drift monitor watches two or more"),
        ({"columns": ["x0", "nope"], "baseline": baseline}, "does not log columns 'nope'"),
        ({"columns": ["x0", "x1"], "baseline": baseline, "method": "magic"}, "method"),
        ({"columns": ["x0", "x1"]}, "baseline"),
        ({"columns": ["x0", "x1"], "baseline": baseline.head(5)}, "baseline: 5 complete rows"),
    ]:
        with pytest.raises(InvalidInputError, match=said):
            client.build_monitor("mv", "p", "multivariate_drift", window="1h", **options).save()
    with pytest.raises(InvalidInputError, match="method: only a multivariate_drift monitor"):
        client.build_monitor("d", "p", "drift", column="x0", method="pca", baseline=baseline)
    assert client.monitors() == []


def test_a_baseline_with_missing_values_scores_as_its_complete_rows_from_any_frame(client) -> None:  # type: ignore[no-untyped-def]
    """A pandas baseline is read without a copy and keeps its incomplete rows (the PCA works on complete rows block
    by block); it must score as its complete rows alone, as the same data given as an Arrow table, as the stored
    baseline read back once saved, and a later change to the caller's frame must not reach it."""
    import pyarrow as pa

    baseline = _rows(3000, 0.9, seed=1)
    baseline.loc[baseline.index % 7 == 0, "x2"] = np.nan
    filled = baseline.fillna(0)
    client.upload_model("m", LogisticRegression().fit(filled, baseline.x0 > 0), sample=filled.head(50))
    _serve(client, "p", _rows(1000, -0.5, seed=2))
    now = datetime.now(UTC) + timedelta(seconds=1)
    columns = ["x0", "x1", "x2", "x3"]

    def score(name: str, given) -> float:  # type: ignore[no-untyped-def]
        monitor = client.build_monitor(name, "p", "multivariate_drift", columns=columns, baseline=given, window="1h")
        (result,) = monitor.preview(now - timedelta(hours=1), now).itertuples()
        return float(result.score)

    complete = score("complete", baseline.dropna().reset_index(drop=True))
    assert score("frame", baseline) == pytest.approx(complete, rel=1e-12)
    assert score("arrow", pa.Table.from_pandas(baseline, preserve_index=False)) == pytest.approx(complete, rel=1e-12)
    kept = client.build_monitor("kept", "p", "multivariate_drift", columns=columns, baseline=baseline, window="1h")
    baseline.loc[:, "x0"] = 100.0  # the caller reuses their frame
    kept.save()
    (result,) = client.monitor("kept").preview(now - timedelta(hours=1), now).itertuples()
    assert result.score == pytest.approx(complete, rel=1e-12)
    with pytest.raises(InvalidInputError, match="columns: multivariate drift needs numeric columns"):
        client.build_monitor("text", "p", "multivariate_drift", columns=["x0", "x1"],
                             baseline=baseline.assign(x1="high"), window="1h")  # fmt: skip


def test_row_errors_equal_an_explicit_reconstruction_and_a_row_with_a_missing_or_infinite_value_has_none() -> None:
    """The PCA's row error is one product with the discarded components; it must equal reconstructing the scaled row
    from the kept components (as NannyML does) for rows far from the mean, and be NaN for a row with a NaN or an
    infinite value, in any block (no block-level check is made for a window: the product carries them)."""
    from finalmile.monitoring.kinds.multivariate import BLOCK_ROWS, _fit_pca

    rng = np.random.default_rng(3)
    rows = rng.normal(size=(BLOCK_ROWS + 500, 5)) @ rng.normal(size=(5, 5)) * [1, 10, 0.1, 1e3, 1] + 1e4
    fitted = _fit_pca(rows)
    window = rows[::-1].copy() * 1.5
    window[[3, BLOCK_ROWS + 7], 1] = np.nan
    window[[10, BLOCK_ROWS + 9], 2] = [np.inf, -np.inf]
    errors = fitted.all_row_errors([window[:, i] for i in range(5)])
    missing = ~np.isfinite(window).all(axis=1)
    z = (window[~missing] - fitted.mean) / fitted.scale
    expected = np.linalg.norm(z - (z @ fitted.components.T) @ fitted.components, axis=1)
    assert np.isnan(errors[missing]).all() and missing.sum() == 4
    np.testing.assert_allclose(errors[~missing], expected, rtol=1e-7)
    assert 0 < fitted.residual.shape[1] < 5
