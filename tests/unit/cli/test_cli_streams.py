"""`finalmile streams apply|list|status|pause|resume|delete` in-process; a bad file gets a message, not a traceback."""

from __future__ import annotations

from pathlib import Path

import joblib
import pytest
from sklearn.linear_model import LogisticRegression

from tests.fixtures import tabular
from tests.unit.cli.test_cli import run

X, y = tabular(100)
STREAM = """name: scores
pipeline: scoring
source: {broker: redis, subject: txns}
sink: {broker: nats, subject: scores}
batch_size: 200
"""


def test_apply_list_status_pause_resume_delete(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    joblib.dump(LogisticRegression().fit(X, y), cli_env / "model.joblib")
    (cli_env / "p.yaml").write_text("name: scoring\nsteps:\n  - model: m:1\n")
    (cli_env / "s.yaml").write_text(STREAM)
    assert run(capsys, "models", "upload", "m", str(cli_env / "model.joblib"))[0] == 0
    assert run(capsys, "pipelines", "apply", str(cli_env / "p.yaml"))[0] == 0
    code, out, _ = run(capsys, "streams", "apply", str(cli_env / "s.yaml"))
    assert code == 0 and "redis:txns -> pipeline scoring -> nats:scores" in out and "txns.dead" in out
    code, out, _ = run(capsys, "streams", "list")
    assert code == 0 and "scores" in out and "not started" in out
    code, out, _ = run(capsys, "streams", "status", "scores")
    assert code == 0 and '"batch_size": 200' in out
    assert "paused" in run(capsys, "streams", "pause", "scores")[1]
    assert "paused" in run(capsys, "streams", "list")[1]
    assert run(capsys, "streams", "resume", "scores")[0] == 0
    assert run(capsys, "streams", "delete", "scores")[0] == 0
    code, _, err = run(capsys, "streams", "status", "scores")
    assert code == 1 and "no stream named 'scores'" in err


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "name: s\npipeline: scoring\nsource: {broker: mqtt, subject: a}\nsink: {broker: redis, subject: b}\n",
            "source.broker",
        ),
        ("name: s\npipeline: scoring\nsource: {broker: redis}\nsink: {broker: redis, subject: b}\n", "source.subject"),
        ("name: [unclosed\n", "not valid YAML"),
    ],
)
def test_a_bad_stream_file_gets_a_message(
    cli_env: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    (cli_env / "bad.yaml").write_text(text)
    code, _, err = run(capsys, "streams", "apply", str(cli_env / "bad.yaml"))
    assert code == 1 and message in err and "Traceback" not in err
    code, _, err = run(capsys, "streams", "apply", str(cli_env / "missing.yaml"))
    assert code == 1 and "missing.yaml" in err and "Traceback" not in err


@pytest.mark.parametrize("group", ["pipelines", "streams", "assays"])
def test_a_definition_that_is_not_text_is_named_without_a_traceback(
    cli_env: Path, capsys: pytest.CaptureFixture[str], group: str
) -> None:
    (cli_env / "saved.yaml").write_bytes(b"\xff\xfename: x\n")  # UTF-16's byte-order mark: an editor's other save
    code, out, err = run(capsys, group, "apply", str(cli_env / "saved.yaml"))
    assert code == 1 and "saved.yaml: not UTF-8 text (byte 0)" in err and "Traceback" not in err + out
