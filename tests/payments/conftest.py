"""Migrated databases for the payments tests: SQLite, and PostgreSQL when it is there."""

from __future__ import annotations

from pathlib import Path

import pytest

from roleferry.runtime import Runtime
from tests.conftest import make_settings


def migrated(tmp_path: Path, url: str | None = None, **overrides: object) -> str:
    settings = make_settings(tmp_path, **({"database_url": url} if url else {}), **overrides)
    Runtime(settings).migrate()
    return settings.database_url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return migrated(tmp_path)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return migrated(tmp_path)
    return migrated(tmp_path, request.getfixturevalue("postgres_url"))
