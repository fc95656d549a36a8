"""Alerts that no monitor raised: the store's own (an inference-log file set aside as corrupt) name their subject.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alerts") as alerts:
        alerts.alter_column("monitor_id", existing_type=sa.Integer, nullable=True)
        alerts.alter_column("result_id", existing_type=sa.Integer, nullable=True)
        alerts.add_column(sa.Column("subject", sa.String(200), nullable=True))
        alerts.add_column(sa.Column("detail", sa.JSON, nullable=True))


def downgrade() -> None:
    op.execute("DELETE FROM alerts WHERE monitor_id IS NULL")
    with op.batch_alter_table("alerts") as alerts:
        alerts.drop_column("detail")
        alerts.drop_column("subject")
        alerts.alter_column("result_id", existing_type=sa.Integer, nullable=False)
        alerts.alter_column("monitor_id", existing_type=sa.Integer, nullable=False)
