"""The shipped example job (examples/jobs/score_yesterday.py) against the machine's real PostgreSQL and MariaDB:
yesterday's rows read, scored through the deployed pipeline, the scores written back; other days untouched."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from cryptography.fernet import Fernet
from sklearn.linear_model import LogisticRegression

from finalmile import Client
from finalmile.config import FinalmileSettings
from finalmile.jobs.runs import last_slot
from tests.conftest import _postgres_schema_url
from tests.fixtures import tabular

EXAMPLE = Path(__file__).parents[2] / "examples" / "jobs" / "score_yesterday.py"
MARIADB_URL = os.environ.get("FINALMILE_TEST_MARIADB_URL")


def _mariadb_database() -> Iterator[str]:
    if not MARIADB_URL:
        if os.environ.get("FINALMILE_REQUIRE_MARIADB"):
            pytest.fail("FINALMILE_REQUIRE_MARIADB is set but FINALMILE_TEST_MARIADB_URL is not")
        pytest.skip("MariaDB tests need FINALMILE_TEST_MARIADB_URL (CI sets it; .ci/run shows how)")
    name = f"fm_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(MARIADB_URL)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except Exception as exc:  # an unreachable server must fail loudly in CI, not skip
        pytest.fail(f"cannot reach MariaDB at {MARIADB_URL}: {exc}")
    try:
        yield sa.make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP DATABASE {name}"))
        admin.dispose()


@pytest.fixture(params=["postgres", "mariadb"])
def warehouse(request: pytest.FixtureRequest) -> Iterator[tuple[str, str]]:
    """A warehouse database of the test's own: (connection type, URL)."""
    urls = _postgres_schema_url() if request.param == "postgres" else _mariadb_database()
    yield from ((request.param, url) for url in urls)


def test_the_example_job_scores_yesterdays_rows_into_the_warehouse(tmp_path: Path, warehouse: tuple[str, str]) -> None:
    kind, url = warehouse
    X, y = tabular(400)
    model = LogisticRegression(max_iter=500).fit(X, y)
    now = dt.datetime.now(dt.UTC)
    slot = last_slot("0 2 * * *", "UTC", now + dt.timedelta(days=1))  # the next 02:00, after the schedule is set
    yesterday = dt.datetime.combine(slot.date() - dt.timedelta(days=1), dt.time())
    stamps = [yesterday + dt.timedelta(minutes=7 * i) for i in range(120)]  # 14 h of yesterday
    stamps += [yesterday - dt.timedelta(hours=3), yesterday + dt.timedelta(days=1, minutes=5)]  # other days
    rows = X.head(len(stamps)).assign(id=range(1, len(stamps) + 1), created_at=stamps)
    engine = sa.create_engine(url)
    rows[["id", "created_at", *X.columns]].to_sql("transactions", engine, index=False)

    settings = FinalmileSettings(home=tmp_path / "home", secret_key=Fernet.generate_key().decode())
    with Client(settings=settings) as client:
        client.upload_model("fraud", model, sample=X.head(50))
        client.build_pipeline("fraud").add_model_step("fraud:1").deploy()
        client.create_connection("warehouse", kind, url)
        client.upload_job("score-yesterday", EXAMPLE)
        client.schedule_job("score-yesterday", "0 2 * * *")
        started = client.services.jobs.run_due(slot + dt.timedelta(minutes=1))
        assert len(started) == 1
        started[0].join(120)
        run = client.job_runs("score-yesterday")[0]
        assert run.status == "succeeded" and run.slot == slot, run.log
        assert f"120 transactions on {yesterday.date()}" in run.log and "wrote 120 scores" in run.log
        logged = client.query("SELECT count(*) AS n FROM logs WHERE pipeline = 'fraud'")
        assert int(logged.n[0]) == 120

    scores = pd.read_sql("SELECT * FROM fraud_scores ORDER BY transaction_id", engine)
    assert scores.transaction_id.tolist() == list(range(1, 121))  # yesterday's only
    assert (pd.to_datetime(scores.day).dt.date == yesterday.date()).all()
    expected = model.predict_proba(X.head(120))[:, 1]
    np.testing.assert_allclose(scores.score.to_numpy(), expected, atol=1e-5)
    engine.dispose()
