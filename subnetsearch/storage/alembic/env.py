"""Alembic environment: the store passes its open connection in `config.attributes["connection"]`."""

from alembic import context

from subnetsearch.storage._models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True,
                  version_table="ss_alembic_version")
with context.begin_transaction():
    context.run_migrations()
