"""The direct SQLite write path: whole transactions, queued behind the ORM's writers."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from roleferry.db import Database


def make_database(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/direct.sqlite")
    with sqlite3.connect(database.urls.sqlite_path) as connection:
        connection.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT UNIQUE)")
    return database


def bodies(database: Database) -> list[str]:
    with sqlite3.connect(database.urls.sqlite_path) as connection:
        return [b for (b,) in connection.execute("SELECT body FROM notes ORDER BY id")]


def insert(body: str) -> Callable[[sqlite3.Connection], None]:
    def work(connection: sqlite3.Connection) -> None:
        connection.execute("INSERT INTO notes (body) VALUES (?)", (body,))

    return work


def insert_then_fail(connection: sqlite3.Connection) -> None:
    connection.execute("INSERT INTO notes (body) VALUES ('lost')")
    raise ValueError("refused after writing")


def test_a_failing_write_leaves_nothing_and_the_next_one_commits(tmp_path: Path) -> None:
    database = make_database(tmp_path)

    async def scenario() -> None:
        with pytest.raises(ValueError, match="refused"):
            await database.run_sqlite_write(insert_then_fail)
        await database.run_sqlite_write(insert("a"))
        with pytest.raises(sqlite3.IntegrityError):
            await database.run_sqlite_write(insert("a"))
        await database.run_sqlite_write(insert("b"))
        await database.dispose()

    asyncio.run(scenario())
    assert bodies(database) == ["a", "b"]


def test_direct_writes_wait_their_turn_behind_an_open_write_session(tmp_path: Path) -> None:
    database = make_database(tmp_path)

    async def scenario() -> list[str]:
        order: list[str] = []
        async with database.write_session() as session:
            await session.execute(text("INSERT INTO notes (body) VALUES ('orm')"))

            def direct_write(connection: sqlite3.Connection) -> None:
                order.append("direct")
                insert("direct")(connection)

            direct = asyncio.create_task(database.run_sqlite_write(direct_write))
            await asyncio.sleep(0.2)
            order.append("orm commits")
        await direct
        await database.dispose()
        return order

    assert asyncio.run(scenario()) == ["orm commits", "direct"]
    assert bodies(database) == ["orm", "direct"]


def test_database_errors_name_the_statement_but_not_the_values(tmp_path: Path) -> None:
    """What a failed write logs must not carry what was written (payloads, addresses)."""
    database = make_database(tmp_path)

    async def scenario() -> str:
        statement = text("INSERT INTO notes (body) VALUES (:body)")
        try:
            for _ in range(2):
                async with database.write_session() as session:
                    await session.execute(statement, {"body": "person@example.com"})
        except IntegrityError as exc:
            return str(exc)
        finally:
            await database.dispose()
        raise AssertionError("the second insert should have failed")

    message = asyncio.run(scenario())
    assert "INSERT INTO notes" in message
    assert "person@example.com" not in message
