"""Alembic migrations, shipped inside the package so `roleferry migrate` works from any folder."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, pool, text

HERE = Path(__file__).parent
LOCK_KEY = 0x526F_6C65_4D69_6772
"""The PostgreSQL advisory lock every process takes to migrate ("RoleMigr")."""


def alembic_config(sync_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["sqlalchemy_url"] = sync_url
    return config


def current(sync_url: str) -> tuple[str, ...]:
    """The revisions the database is at; empty when it was never migrated."""
    engine = create_engine(sync_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            return tuple(sorted(MigrationContext.configure(connection).get_current_heads()))
    finally:
        engine.dispose()


def upgrade(sync_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(sync_url), revision)


def downgrade(sync_url: str, revision: str) -> None:
    command.downgrade(alembic_config(sync_url), revision)


@contextmanager
def advisory_lock(sync_url: str) -> Iterator[None]:
    """Holds PostgreSQL's session advisory lock for migrations: processes that start together
    migrate one after another, the later ones finding the schema up to date."""
    engine = create_engine(sync_url, poolclass=pool.NullPool)
    try:
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": LOCK_KEY})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
    finally:
        engine.dispose()
