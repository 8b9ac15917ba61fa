"""Alembic migrations, shipped inside the package so `roleferry migrate` works from any folder."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

HERE = Path(__file__).parent


def alembic_config(sync_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.attributes["sqlalchemy_url"] = sync_url
    return config


def upgrade(sync_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(sync_url), revision)


def downgrade(sync_url: str, revision: str) -> None:
    command.downgrade(alembic_config(sync_url), revision)
