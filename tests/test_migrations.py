"""Migrations apply on both storage engines, and down again."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, inspect

from roleferry import migrations
from roleferry.db import DatabaseUrls
from tests.conftest import bearer, create_user, make_settings, start_client


def tables(sync_url: str) -> set[str]:
    engine = create_engine(sync_url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def check_up_and_down(url: str) -> None:
    urls = DatabaseUrls(url)
    urls.ensure_directory()
    sync = urls.render(urls.sync_url)
    migrations.upgrade(sync)
    assert {"users", "api_keys", "alembic_version"} <= tables(sync)
    migrations.upgrade(sync)
    migrations.downgrade(sync, "base")
    assert tables(sync) == {"alembic_version"}
    migrations.upgrade(sync)
    assert {"users", "api_keys"} <= tables(sync)


def test_migrations_up_and_down_on_sqlite(tmp_path: Path) -> None:
    check_up_and_down(f"sqlite:///{tmp_path}/m.sqlite")


@pytest.mark.postgres
def test_migrations_up_and_down_on_postgres(postgres_url: str) -> None:
    check_up_and_down(postgres_url)


def test_sqlite_runs_in_wal_mode(client: TestClient) -> None:
    from sqlalchemy import text

    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def mode() -> str:
        async with runtime.db.session() as session:
            return str(await session.scalar(text("PRAGMA journal_mode")))

    assert client.portal.call(mode) == "wal"  # type: ignore[union-attr]


@pytest.mark.postgres
def test_the_whole_app_runs_on_postgres(tmp_path: Path, postgres_url: str) -> None:
    """Same code on PostgreSQL: DBOS's system database beside the app's, auth and scoping."""
    settings = make_settings(tmp_path, database_url=postgres_url)
    with start_client(settings) as client:
        assert client.get("/readyz").json()["dbos"] == "launched"
        alice = create_user(client, "alice@example.com")
        bob = create_user(client, "bob@example.com")
        bobs = client.get("/api/v1/api-keys", headers=bearer(bob)).json()[0]["id"]
        assert client.get(f"/api/v1/api-keys/{bobs}", headers=bearer(alice)).status_code == 404
        assert client.get(f"/api/v1/api-keys/{bobs}", headers=bearer(bob)).status_code == 200
    assert {"users", "api_keys"} <= tables(
        DatabaseUrls(postgres_url).render(DatabaseUrls(postgres_url).sync_url)
    )
