"""Alembic environment: runs on a connection handed over by ``SqlDatabase.upgrade``."""

from __future__ import annotations

from alembic import context

from tokenstile.stores.sql_tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `tokenstile db upgrade`")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
