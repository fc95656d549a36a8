"""Batch inference over files: streamed, equal to predict, resumable without duplicates, malformed input refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.errors import InvalidInputError
from tests.fixtures import tabular
from tests.unit.cli.test_cli import run

X, y = tabular(3000)


@pytest.fixture
def pipeline(client: Client):  # type: ignore[no-untyped-def]
    client.upload_model("m", LogisticRegression().fit(X, y), sample=X.head(10))
    p = client.build_pipeline("p").add_model_step("m:1")
    p.deploy()
    return p


def test_each_format_streams_to_the_same_answers(client: Client, pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    expected = client.model("m:1").predict(X).score.to_numpy()
    X.to_parquet(tmp_path / "in.parquet")
    X.to_csv(tmp_path / "in.csv", index=False)
    X.to_json(tmp_path / "in.jsonl", orient="records", lines=True)
    for source, target in (("in.parquet", "out.parquet"), ("in.csv", "out.csv"), ("in.jsonl", "out.parquet")):
        result = pipeline.infer_file(tmp_path / source, tmp_path / target, batch_size=700, progress=False)
        assert result.rows == 3000 and result.resumed_batches == 0
        out = pd.read_parquet(tmp_path / target) if target.endswith("parquet") else pd.read_csv(tmp_path / target)
        np.testing.assert_allclose(out.score, expected, rtol=1e-6)
        np.testing.assert_allclose(out.x0, X.x0, rtol=1e-6)
        assert not (tmp_path / f"{target}.partial").exists()
    assert pipeline.logs().empty  # logging is off unless asked for
    pipeline.infer_file(tmp_path / "in.parquet", tmp_path / "logged.parquet", batch_size=1000, log=True, progress=False)
    assert len(pipeline.logs()) == 3000


def test_an_interrupted_run_resumes_without_duplicates(
    client: Client,
    pipeline,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
) -> None:
    X.to_parquet(tmp_path / "in.parquet")
    original = client.services.infer
    calls = {"n": 0}

    def flaky(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(client.services, "infer", flaky)
    with pytest.raises(KeyboardInterrupt):
        pipeline.infer_file(tmp_path / "in.parquet", tmp_path / "out.parquet", batch_size=500, progress=False)
    assert not (tmp_path / "out.parquet").exists()
    assert len(list((tmp_path / "out.parquet.partial").glob("part-*.arrow"))) == 3
    monkeypatch.setattr(client, "infer_pipeline", original)
    result = pipeline.infer_file(tmp_path / "in.parquet", tmp_path / "out.parquet", batch_size=500, progress=False)
    assert (result.rows, result.batches, result.resumed_batches) == (3000, 6, 3)
    out = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert len(out) == 3000
    np.testing.assert_allclose(out.x1, X.x1)  # every row once, in order


def test_malformed_input_names_the_batch_and_writes_nothing(pipeline, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    lines = X.head(50).to_csv(index=False).splitlines()
    lines.insert(30, "1.0,oops")
    (tmp_path / "bad.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(InvalidInputError, match="bad.csv"):
        pipeline.infer_file(tmp_path / "bad.csv", tmp_path / "out.csv", batch_size=10, progress=False)
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "out.csv.partial").exists()


def test_cli_infer_file(client: Client, pipeline, cli_env: Path, capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("FINALMILE_HOME", str(client.settings.home))
    monkeypatch.setenv("FINALMILE_DATABASE_URL", client.settings.resolved_database_url())
    X.head(100).to_csv(cli_env / "rows.csv", index=False)
    code, out, _ = run(capsys, "infer-file", "p", str(cli_env / "rows.csv"), str(cli_env / "scored.parquet"))
    assert code == 0 and "wrote 100 rows" in out
    code, _, err = run(capsys, "infer-file", "p", str(cli_env / "missing.csv"), str(cli_env / "x.parquet"))
    assert code == 1 and "no such file" in err
