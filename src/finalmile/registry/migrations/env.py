"""Alembic environment: runs on the connection that `finalmile.registry.db.migrate` hands over."""

from __future__ import annotations

from alembic import context

from finalmile.registry import rollout_tables  # noqa: F401  (its tables join Base.metadata)
from finalmile.registry.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
