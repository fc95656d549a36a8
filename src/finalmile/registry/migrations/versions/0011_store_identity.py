"""The store's identity: one random id, made when the store is created (or first migrated to this revision).

Servers name what they start in a shared Ray cluster after it, so two stores (staging and production) deploying
the same pipeline version never adopt, or delete, each other's replicas.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table("store_identity", sa.Column("id", sa.String(32), primary_key=True))
    op.bulk_insert(table, [{"id": uuid.uuid4().hex}])


def downgrade() -> None:
    op.drop_table("store_identity")
