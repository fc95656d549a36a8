"""Every command of a declared verb, run with `--url`/`--token` (from the environment) against a live server: the
files it names are read here and sent, the server does the work, and the walk fails unless it has run every
command `finalmile.verbs.VERBS` declares."""

from __future__ import annotations

import shlex
from pathlib import Path

import joblib
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.verbs import VERBS
from tests.fixtures import tabular
from tests.integration.conftest import require_broker
from tests.unit.cli.test_cli import run

X, y = tabular(120)


def _files(folder: Path) -> None:
    joblib.dump(LogisticRegression().fit(X, y), folder / "model.joblib")
    joblib.dump(LogisticRegression(C=0.1).fit(X, 1 - y), folder / "model2.joblib")
    X.head(40).to_csv(folder / "sample.csv", index=False)
    X.head(12).to_csv(folder / "rows.csv", index=False)
    (folder / "p.yaml").write_text(
        "name: p\nsteps:\n  - kind: split\n    variants:\n"
        "      - {name: a, weight: 1, steps: [{model: m@champion}]}\n"
        "      - {name: b, weight: 1, steps: [{model: 'm:2'}]}\n"
        "  - {kind: check, name: high, expression: 'out.score > 0.7'}\n"
    )
    (folder / "slow.yaml").write_text("name: slow\npipeline: p\nkind: latency_p99\nwindow: 1h\nalert: 0.000001\n")
    (folder / "s.yaml").write_text(
        "name: s\npipeline: p\nsource: {broker: nats, subject: cli-live-in}\n"
        "sink: {broker: nats, subject: cli-live-out}\n"
    )
    (folder / "q.yaml").write_text("name: q\nsteps:\n  - model: m@champion\n")
    (folder / "job.py").write_text("def main(ctx):\n    print('ran')\n")


COMMANDS = """
whoami
models upload m {d}/model.joblib --sample {d}/sample.csv --alias champion
models upload m {d}/model2.joblib --sample {d}/sample.csv
models list
models show m@champion
models versions m
models alias m 2 challenger
models unalias m challenger
models upload m {d}/model.joblib
models delete m 3
pipelines apply {d}/p.yaml --deploy
pipelines list
pipelines show p
pipelines versions p
deployments
deploy p --max-batch-size 16
bundle p --output {d}/bundle --no-wheels
infer p --input {d}/rows.csv --output {d}/out.parquet
infer-file p {d}/rows.csv {d}/scored.parquet --batch-size 5
logs p --since 1h
logs p --since 1h --output {d}/export.csv
query "SELECT count(*) AS n FROM logs"
ground-truth p {d}/labels.csv
logs-health
queries save q "SELECT 1 AS one"
queries list
queries delete q
replay p m:2 --since 1h
replays list
replays show 1
replays rows 1
explain p {rid}
models explain m:1 --input {d}/rows.csv --output {d}/why.csv
importance p --since 1h --rows 5
pipelines apply {d}/q.yaml --deploy
rollout q m:2 --steps 50,100 --every 1h --min-rows 5
rollouts list
rollouts show 1
rollouts run
rollouts control 1 abort
route p b
rollback p
assays apply {d}/slow.yaml --start 1h
assays list
assays show slow
assays run
assays results slow
assays preview slow --since 2h
alerts
acknowledge 1
assays delete slow
audit --target "pipeline p"
streams apply {d}/s.yaml
streams list
streams status s
streams pause s
streams resume s
streams delete s
jobs upload j {d}/job.py
jobs schedule j --cron "0 2 * * *"
jobs show j
jobs list
jobs run j
jobs runs j
jobs delete j
connections create c postgresql://u:secret@127.0.0.1/db --type postgres
connections list
connections delete c
users add rita --role editor
tokens create --role viewer --user rita --name t
tokens list
tokens revoke 2
users list
users remove rita
undeploy p
"""


def test_every_declared_command_against_a_live_server_with_a_token(
    tmp_path: Path, server_factory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # type: ignore[no-untyped-def]
    require_broker("nats")
    home, work = tmp_path / "home", tmp_path / "work"
    work.mkdir()
    _files(work)
    with Client(home=home) as setup:
        token = setup.services.init_access()[1]
    server = server_factory(home, env={"FINALMILE_MONITOR_POLL_S": "3600", "FINALMILE_SECRET_KEY": _key()}, auth=True)
    monkeypatch.setenv("FINALMILE_URL", server.url)
    monkeypatch.setenv("FINALMILE_TOKEN", token)
    monkeypatch.setenv("FINALMILE_HOME", str(tmp_path / "not-the-store"))  # the server's store is the only one
    monkeypatch.chdir(work)
    declared = {v.cli for v in VERBS.values() if v.cli}
    ran: set[str] = set()
    for line in COMMANDS.strip().splitlines():
        rid = pd.read_csv(work / "export.csv").request_id.iloc[0] if "{rid}" in line else ""
        args = shlex.split(line.format(d=work, rid=rid))
        if args[0] == "ground-truth":  # labels for the request ids the server logged
            ids = pd.read_csv(work / "export.csv").request_id.unique()
            pd.DataFrame({"request_id": ids, "is_fraud": 1}).to_csv(work / "labels.csv", index=False)
        code, out, err = run(capsys, *args)
        assert code == 0, f"finalmile {line}\n{out}\n{err}"
        ran |= {" ".join(args[:2]), args[0]} & declared
    assert ran == declared, sorted(declared - ran)
    assert not (tmp_path / "not-the-store").exists()  # nothing ran on a local store
    with Client(home=home) as store:
        actors = set(store.audit("pipeline p").actor)
    assert actors == {"admin (token 1)"}, actors  # the server did the work, as the token's user


def _key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()
