"""Alembic environment: the URL comes from the caller, the metadata from our models."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from roleferry.models import Base

config = context.config
url = config.attributes["sqlalchemy_url"]
connectable = create_engine(url, poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
connectable.dispose()
