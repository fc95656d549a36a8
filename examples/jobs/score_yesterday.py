"""A nightly scoring job: read yesterday's transactions from the warehouse, score them through the deployed
`fraud` pipeline, write the scores back. The same code runs against PostgreSQL and MariaDB/MySQL.

    finalmile connections create warehouse postgresql://etl:PASSWORD@db:5432/dw --type postgres
    finalmile jobs upload score-yesterday examples/jobs/score_yesterday.py
    finalmile jobs schedule score-yesterday --cron "0 2 * * *" --tz Europe/Paris --retries 2

The warehouse has `transactions(id, created_at, <the pipeline's input columns>)`; the job creates
`fraud_scores(transaction_id, day, score, scored_at)` if it is missing. "Yesterday" is the day before the slot the
run is for (a run by hand: before today, UTC). A rerun for the same day replaces that day's scores in one
transaction, so a retried or repeated run never writes a row twice.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd
import sqlalchemy as sa

PIPELINE = "fraud"
CONNECTION = "warehouse"

metadata = sa.MetaData()
fraud_scores = sa.Table(
    "fraud_scores",
    metadata,
    sa.Column("transaction_id", sa.BigInteger, primary_key=True),
    sa.Column("day", sa.Date, nullable=False, index=True),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("scored_at", sa.DateTime, nullable=False),
)


def main(ctx) -> None:  # type: ignore[no-untyped-def]
    slot = dt.datetime.fromisoformat(ctx.slot) if ctx.slot else dt.datetime.now(dt.UTC)
    day = slot.date() - dt.timedelta(days=1)
    start = dt.datetime.combine(day, dt.time())
    engine = ctx.engine(CONNECTION)
    query = sa.text("SELECT * FROM transactions WHERE created_at >= :start AND created_at < :end ORDER BY id")
    with engine.connect() as conn:
        rows = pd.read_sql(query, conn, params={"start": start, "end": start + dt.timedelta(days=1)})
    ctx.log(f"{len(rows)} transactions on {day}")
    if rows.empty:
        return
    scored = ctx.client.pipeline(PIPELINE).infer(rows.drop(columns=["id", "created_at"]))
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    out = [
        {"transaction_id": int(i), "day": day, "score": float(s), "scored_at": now}
        for i, s in zip(rows["id"], scored["score"], strict=True)
    ]
    metadata.create_all(engine)
    with engine.begin() as conn:  # one transaction: the day's old scores go only if the new ones land
        conn.execute(fraud_scores.delete().where(fraud_scores.c.day == day))
        conn.execute(fraud_scores.insert(), out)
    ctx.log(f"wrote {len(out)} scores for {day}")
