"""The CLI in-process (and once as a real subprocess): success paths, and user errors without tracebacks."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import joblib
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile.cli import main
from tests.fixtures import tabular

X, y = tabular(200)


@pytest.fixture
def workdir(cli_env: Path) -> Path:
    joblib.dump(LogisticRegression().fit(X, y), cli_env / "model.joblib")
    X.head(50).to_csv(cli_env / "rows.csv", index=False)
    return cli_env


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_upload_list_show_alias_predict(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "models",
        "upload",
        "fraud",
        str(workdir / "model.joblib"),
        "--sample",
        str(workdir / "rows.csv"),
        "--alias",
        "champion",
        "--tag",
        "team=risk",
    )
    assert code == 0, out
    assert "Registered fraud:1 (sklearn, serving with onnx)" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "fraud" in out and "champion→1" in out
    code, out, _ = run(capsys, "models", "show", "fraud@champion")
    assert code == 0
    assert "ONNX conversion: converted" in out
    assert "parity on 50 rows (given): 0 label mismatches" in out
    assert "team=risk" in out and "x0" in out and "probabilities" in out
    assert run(capsys, "models", "alias", "fraud", "1", "challenger")[0] == 0
    code, out, _ = run(capsys, "predict", "fraud@challenger", "--input", str(workdir / "rows.csv"))
    assert code == 0 and "label" in out and "30 more rows" in out
    for name in ("out.parquet", "out.csv", "out.jsonl"):
        code, out, _ = run(capsys, "predict", "fraud:1", "-i", str(workdir / "rows.csv"), "-o", str(workdir / name))
        assert code == 0, out
    table = pq.read_table(workdir / "out.parquet")
    assert table.num_rows == 50 and table.column_names == ["label", "probabilities", "score"]
    with (workdir / "out.csv").open() as f:
        assert next(csv.reader(f)) == ["label", "probabilities_0", "probabilities_1", "score"]
    assert len((workdir / "out.jsonl").read_text().splitlines()) == 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["models", "upload", "m", "missing.onnx"], "no such file or directory"),
        (["models", "show", "nope"], "model 'nope' not found"),
        (["models", "show", "bad ref!"], "model 'bad ref!' not found"),
        (["models", "upload", "m", "model.joblib", "--tag", "oops"], "expected KEY=VALUE"),
        (["predict", "nope", "--input", "rows.csv"], "model 'nope' not found"),
        (["predict", "m", "--input", "rows.xlsx"], "unknown file type"),
    ],
)
def test_user_errors_exit_non_zero_with_one_line(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    monkeypatch.chdir(workdir)
    code, out, err = run(capsys, *args)
    assert code == 1
    assert message in err
    assert "Traceback" not in err + out


def test_predict_reports_schema_problems_and_bad_files(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "models", "upload", "m", str(workdir / "model.joblib"))[0] == 0
    X.head(5).drop(columns=["x1"]).to_csv(workdir / "partial.csv", index=False)
    code, _, err = run(capsys, "predict", "m", "--input", str(workdir / "partial.csv"))
    assert code == 1 and "column 'x1': missing (expected float64)" in err
    (workdir / "broken.parquet").write_bytes(b"PAR1 not really")
    code, _, err = run(capsys, "predict", "m", "--input", str(workdir / "broken.parquet"))
    assert code == 1 and "broken.parquet: cannot read it as parquet" in err


def test_a_real_subprocess_prints_no_traceback(workdir: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from finalmile.cli import main; main()", "models", "upload", "m", "nope.pkl"],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    assert result.returncode == 1
    assert "error: nope.pkl: no such file or directory" in result.stderr
    assert "Traceback" not in result.stderr
    helped = subprocess.run([sys.executable, "-m", "finalmile", "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "models" in helped.stdout


def test_a_command_on_a_store_imports_none_of_the_libraries_only_some_commands_need(cli_env: Path) -> None:
    # scipy, scikit-learn, pandas and Alembic took ~1.6 s of every command's 3 s (drift tests, performance
    # metrics, data frames, migrations); each is imported where it is used, and Alembic only when a store migrates.
    heavy = ("scipy", "sklearn", "pandas", "alembic")
    script = (
        "import sys\nfrom finalmile.cli import main\n"
        "try:\n    main(['models', 'list'])\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        f"print(','.join(m for m in {heavy!r} if m in sys.modules))"
    )
    runs = [subprocess.run([sys.executable, "-c", script], capture_output=True, text=True) for _ in range(2)]
    assert [r.returncode for r in runs] == [0, 0], runs[-1].stderr
    assert runs[0].stdout.splitlines()[-1] == "alembic"  # the first made the store: Alembic migrated it
    assert runs[1].stdout.splitlines()[-1] == ""


def test_query_results_of_any_type_print_as_csv(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sql = "SELECT [0.5, 1.5]::DOUBLE[] AS p, {'a': 1} AS s, '\\xFF'::BLOB AS raw, 3 AS n"
    code, out, err = run(capsys, "query", sql, "--format", "csv")
    assert code == 0, err
    assert out.splitlines() == ['"p_0","p_1","s","raw","n"', '0.5,1.5,"{""a"": 1}","ff",3']


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["serve", "--port", "99999"], "--port"),  # a server started, instead of a refusal
        (["serve", "--port", "-1"], "--port"),
        (["serve", "--workers", "0"], "--workers"),
        (["logs", "p", "--limit", "-1"], "--limit"),
        (["audit", "--limit", "0"], "--limit"),
    ],
)
def test_numbers_out_of_range_are_refused_naming_the_option(
    cli_env: Path, capsys: pytest.CaptureFixture[str], args: list[str], option: str
) -> None:
    code, out, err = run(capsys, *args)
    assert code == 2 and f"Invalid value for '{option}'" in err and "Traceback" not in err + out


def test_a_token_lifetime_past_any_bound_is_a_message_not_a_traceback(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(capsys, "admin", "init")[0] == 0
    code, out, err = run(capsys, "tokens", "create", "--role", "viewer", "--expires", "3000000d")
    assert code == 1 and "expires '3000000d': must be between 0 and 3650 days" in err
    assert "Traceback" not in out + err and "fm_" not in out
