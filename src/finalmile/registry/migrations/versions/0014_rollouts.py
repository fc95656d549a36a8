"""Rollouts: a candidate brought in step by step, judged against the champion; and error rows name their variant.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("candidate", sa.String(400), nullable=False),
        sa.Column("candidate_spec", sa.JSON, nullable=False),
        sa.Column("champion_version", sa.Integer, nullable=False),
        sa.Column("plan", sa.JSON, nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("holds", sa.Integer, nullable=False),
        sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("serving_version", sa.Integer, nullable=True),
        sa.Column("settled", sa.Boolean, nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("reason", sa.Text, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "rollout_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "rollout_id", sa.Integer, sa.ForeignKey("rollouts.id", ondelete="CASCADE"), nullable=False, index=True
        ),
        sa.Column("step", sa.Integer, nullable=False),
        sa.Column("attempt", sa.Integer, nullable=True),
        sa.Column("decision", sa.String(20), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.JSON, nullable=False),
        sa.Column("weight", sa.Float, nullable=False),
        sa.Column("actor", sa.String(200), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("rollout_id", "step", "attempt", name="uq_rollout_events_evaluation"),
    )


def downgrade() -> None:
    op.drop_table("rollout_events")
    op.drop_table("rollouts")
