"""Scheduled jobs and their runs (a unique slot per job: with several schedulers, each slot runs once).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False, unique=True),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("code", sa.LargeBinary, nullable=False),
        sa.Column("cron", sa.String(200), nullable=True),
        sa.Column("tz", sa.String(100), nullable=False),
        sa.Column("timeout_s", sa.Float, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("deadline_s", sa.Float, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("job", sa.String(100), nullable=False, index=True),
        sa.Column("slot", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("exit_code", sa.Integer, nullable=True),
        sa.Column("log", sa.Text, nullable=False),
        sa.Column("runner", sa.String(200), nullable=False),
        sa.UniqueConstraint("job", "slot"),
    )


def downgrade() -> None:
    op.drop_table("job_runs")
    op.drop_table("jobs")
