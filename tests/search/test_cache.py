"""The answer cache's write is one upsert: concurrent writers of the same key all succeed
(a delete-then-insert raced into IntegrityError), on SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from roleferry import migrations
from roleferry.db import Database, DatabaseUrls
from roleferry.search import cache
from roleferry.users import service as users


async def write_concurrently(url: str) -> None:
    urls = DatabaseUrls(url)
    urls.ensure_directory()
    migrations.upgrade(urls.render(urls.sync_url))
    database = Database(url)
    try:
        async with database.session() as session:
            user = (await users.create_user(session, "cache@example.com")).user

        async def put(n: int) -> None:
            async with database.write_session() as session:
                await cache.put(session, user.id, "search", "k", {"n": n}, 60, commit=False)

        await asyncio.gather(*(put(n) for n in range(20)))
        async with database.session() as session:
            value = await cache.get(session, user.id, "search", "k")
        assert value is not None
        assert value["n"] in range(20)
    finally:
        await database.dispose()


async def test_concurrent_puts_on_sqlite(tmp_path: Path) -> None:
    """Twenty writers of one key on SQLite: no error, one entry left."""
    await write_concurrently(f"sqlite:///{tmp_path}/c.sqlite")


async def test_concurrent_puts_on_postgres(postgres_url: str) -> None:
    """Twenty writers of one key on PostgreSQL at once: no IntegrityError, one entry left."""
    await write_concurrently(postgres_url)


@pytest.mark.parametrize("ttl", [0, -1])
async def test_nothing_is_stored_without_a_lifetime(tmp_path: Path, ttl: int) -> None:
    """A cache lifetime of 0 (ROLEFERRY_SEARCH_CACHE_TTL_S=0) stores nothing."""
    url = f"sqlite:///{tmp_path}/c.sqlite"
    urls = DatabaseUrls(url)
    urls.ensure_directory()
    migrations.upgrade(urls.render(urls.sync_url))
    database = Database(url)
    try:
        async with database.write_session() as session:
            await cache.put(session, "u", "search", "k", {"n": 1}, ttl, commit=False)
        async with database.session() as session:
            assert await cache.get(session, "u", "search", "k") is None
    finally:
        await database.dispose()
