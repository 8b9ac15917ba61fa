"""The application database: one async engine per process, chosen by ROLEFERRY_DATABASE_URL.

SQLite (the embedded default) runs in WAL mode so readers never wait for the writer;
PostgreSQL is the scale-out choice. Alembic and DBOS need synchronous URLs, derived here.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import orjson
from sqlalchemy import event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

T = TypeVar("T")


class Base(DeclarativeBase):
    """Declarative base of every table; Alembic reads its metadata."""


def insert_for(session: AsyncSession, table: Any) -> Any:
    """An INSERT that takes ON CONFLICT clauses, in the session's dialect (both have them)."""
    dialect = session.bind.dialect.name if session.bind is not None else "sqlite"
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


class DatabaseUrls:
    """The three URLs one setting implies: async app, sync app (Alembic), DBOS system database."""

    def __init__(self, url: str) -> None:
        parsed = make_url(url)
        backend = parsed.get_backend_name()
        if backend in ("postgres", "postgresql"):
            self.is_sqlite = False
            self.async_url = parsed.set(drivername="postgresql+psycopg")
            self.sync_url = self.async_url
            self.system_url = parsed.set(
                drivername="postgresql", database=f"{parsed.database}_dbos"
            )
        elif backend == "sqlite":
            self.is_sqlite = True
            if not parsed.database or parsed.database == ":memory:":
                raise ValueError("the SQLite database must be a file, e.g. sqlite:///./app.sqlite")
            path = Path(parsed.database)
            self.sqlite_path: Path = path
            self.async_url = parsed.set(drivername="sqlite+aiosqlite")
            self.sync_url = parsed.set(drivername="sqlite")
            system = path.with_name(f"{path.stem}.dbos{path.suffix or '.sqlite'}")
            self.system_url = parsed.set(drivername="sqlite", database=str(system))
        else:
            raise ValueError(f"unsupported database backend {backend!r}: use sqlite or postgresql")

    def render(self, url: URL) -> str:
        return url.render_as_string(hide_password=False)

    def ensure_directory(self) -> None:
        if self.is_sqlite:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)


def _dumps(value: Any) -> str:
    """orjson: JSON columns are on the webhook hot path, and it is several times faster."""
    return orjson.dumps(value).decode()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    # We emit BEGIN ourselves (see _sqlite_begin), so the driver must not.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    """BEGIN IMMEDIATE for write sessions: a deferred transaction that reads and then writes
    fails at once with SQLITE_BUSY when another writer committed in between; an immediate one
    takes the write lock first and waits its turn (busy_timeout)."""
    mode = connection.get_execution_options().get("sqlite_begin", "")
    connection.exec_driver_sql(f"BEGIN {mode}".strip())


class Database:
    """Owns the engine and hands out sessions; one per process, closed at shutdown."""

    def __init__(self, url: str) -> None:
        self.urls = DatabaseUrls(url)
        self.urls.ensure_directory()
        kwargs: dict[str, Any] = {
            # Errors and their logs name the statement, not the values bound to it (payloads,
            # addresses, key hashes).
            "hide_parameters": True,
            "pool_pre_ping": not self.urls.is_sqlite,
            "json_serializer": _dumps,
            "json_deserializer": orjson.loads,
        }
        if not self.urls.is_sqlite:
            kwargs.update(pool_size=10, max_overflow=20)
        self.engine: AsyncEngine = create_async_engine(self.urls.async_url, **kwargs)
        if self.urls.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(self.engine.sync_engine, "begin", _sqlite_begin)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; queueing our writers here, in order, beats letting
        # them poll SQLite's lock with its sleeping busy handler.
        self._write_lock = asyncio.Lock()
        self._direct: sqlite3.Connection | None = None
        self._direct_thread = ThreadPoolExecutor(1, thread_name_prefix="sqlite-direct-writer")

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    @asynccontextmanager
    async def write_session(self) -> AsyncIterator[AsyncSession]:
        """A session in a transaction that holds the write lock from its start (SQLite),
        committed when the block ends, rolled back if it raises."""
        if not self.urls.is_sqlite:
            async with self.sessions() as session, session.begin():
                yield session
            return
        async with self._write_lock, self.sessions() as session, session.begin():
            await session.connection(execution_options={"sqlite_begin": "IMMEDIATE"})
            yield session

    async def run_sqlite_write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Runs `work` in one write transaction on a connection and thread of its own, queued
        on the same lock as `write_session`: one hop to a thread per transaction instead of
        one per statement, for hot paths that need no ORM (the webhook inbox)."""
        if not self.urls.is_sqlite:
            raise RuntimeError("run_sqlite_write is for the SQLite database only")
        loop = asyncio.get_running_loop()
        async with self._write_lock:
            done = loop.run_in_executor(self._direct_thread, self._transaction, work)
            try:
                return await asyncio.shield(done)
            finally:
                # Cancelled while the thread writes: keep the lock until its transaction ends.
                if not done.done():
                    await asyncio.wait([done])

    def _transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        if self._direct is None:
            self._direct = sqlite3.connect(self.urls.sqlite_path, check_same_thread=False)
            _sqlite_pragmas(self._direct)
        connection = self._direct
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = work(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    async def dispose(self) -> None:
        if self._direct is not None:
            connection, self._direct = self._direct, None
            await asyncio.get_running_loop().run_in_executor(self._direct_thread, connection.close)
        self._direct_thread.shutdown(wait=False)
        await self.engine.dispose()
