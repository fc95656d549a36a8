"""`finalmile pipelines apply|list|show`, `deploy`, `undeploy`, `infer` in-process; errors without tracebacks."""

from __future__ import annotations

from pathlib import Path

import joblib
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from tests.fixtures import tabular
from tests.unit.cli.test_cli import run

X, y = tabular(100)


@pytest.fixture
def workdir(cli_env: Path) -> Path:
    joblib.dump(LogisticRegression().fit(X, y), cli_env / "model.joblib")
    X.head(10).to_csv(cli_env / "rows.csv", index=False)
    (cli_env / "p.yaml").write_text("name: scoring\nsteps:\n  - model: m@champion\n")
    return cli_env


def test_apply_list_show_deploy_infer_undeploy(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "models", "upload", "m", str(workdir / "model.joblib"), "--alias", "champion")[0] == 0
    code, out, _ = run(capsys, "pipelines", "apply", str(workdir / "p.yaml"))
    assert code == 0 and "scoring: version 1" in out
    assert "scoring: version 1" in run(capsys, "pipelines", "apply", str(workdir / "p.yaml"))[1]  # unchanged
    code, out, _ = run(capsys, "pipelines", "show", "scoring")
    assert code == 0 and "model: m:1" in out
    assert run(capsys, "deploy", "scoring", "--max-batch-size", "32")[0] == 0
    code, out, _ = run(capsys, "pipelines", "list")
    assert code == 0 and "scoring" in out
    code, out, _ = run(capsys, "infer", "scoring", "-i", str(workdir / "rows.csv"), "-o", str(workdir / "out.parquet"))
    assert code == 0, out
    assert pq.read_table(workdir / "out.parquet").column_names == ["label", "probabilities", "score"]
    assert run(capsys, "undeploy", "scoring")[0] == 0
    code, _, err = run(capsys, "undeploy", "scoring")
    assert code == 1 and "is not deployed" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pipelines", "apply", "missing.yaml"], "missing.yaml: No such file"),
        (["pipelines", "show", "nope"], "pipeline 'nope' not found"),
        (["deploy", "nope"], "pipeline 'nope' not found"),
        (["infer", "nope", "--input", "rows.csv"], "pipeline 'nope' is not deployed"),
    ],
)
def test_pipeline_errors_are_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(workdir)
    code, out, err = run(capsys, *args)
    assert code == 1 and message in err and "Traceback" not in out + err


def test_a_bad_definition_names_the_problem(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "bad.yaml").write_text("name: x\nsteps:\n  - kind: split\n    variants: []\n")
    code, _, err = run(capsys, "pipelines", "apply", str(workdir / "bad.yaml"))
    assert code == 1 and "invalid pipeline definition" in err and "variants" in err
