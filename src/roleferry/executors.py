"""Who runs durable work on PostgreSQL, and taking over from a process that died.

DBOS recovers a process's own pending workflows when it starts again under the same
executor id; a process that never comes back would leave them with nobody. So each process
writes a heartbeat row every `heartbeat_interval_s`, and every process checks, as often, for
rows older than `executor_dead_after_s`: it locks such a row (`FOR UPDATE SKIP LOCKED`, so
two survivors never both take over one executor), hands that executor's pending workflows
back to their queues through DBOS's recovery, and deletes the row in the same transaction.
A survivor that dies mid-way rolls back and leaves the row for the next; DBOS's recovery is
idempotent besides (it only re-queues workflows still owned by the dead executor).

A process stopping gracefully first lets DBOS finish (or stop) its steps, then dates its own
row back so that a survivor takes over what is left at its next check, not a bound later.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import DateTime, String, delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Mapped, mapped_column

from roleferry.background import cancel_and_wait
from roleferry.db import Base, Database

log = structlog.get_logger(__name__)

Recover = Callable[[str], Awaitable[int]]
"""Hands an executor's pending workflows back to their queues; returns how many."""


class ExecutorInUse(RuntimeError):
    """Another live process already runs under this executor id."""


class ExecutorHeartbeat(Base):
    __tablename__ = "executor_heartbeats"

    executor_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


def new_executor_id() -> str:
    """Unique per process start, and readable in DBOS's tables: host, pid and a random tail."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class Heartbeat:
    def __init__(
        self,
        database: Database,
        executor_id: str,
        recover: Recover,
        interval_s: float,
        dead_after_s: float,
    ) -> None:
        self.database = database
        self.executor_id = executor_id
        self.recover = recover
        self.interval_s = interval_s
        self.dead_after_s = dead_after_s
        self._tasks: list[asyncio.Task[None]] = []

    async def claim(self) -> None:
        """Writes this process's first heartbeat. An id whose row is still fresh may be this
        process's previous life (killed a moment ago) or another live process: wait until the
        row goes stale, and refuse the id if it never does."""
        deadline = asyncio.get_running_loop().time() + self.dead_after_s + 2 * self.interval_s
        while not await self._try_claim():
            if asyncio.get_running_loop().time() > deadline:
                raise ExecutorInUse(
                    f"executor id {self.executor_id!r} belongs to a live process: give each "
                    "process its own ROLEFERRY_EXECUTOR_ID, or leave it unset for a generated one"
                )
            await asyncio.sleep(self.interval_s)

    async def _try_claim(self) -> bool:
        now = func.now()
        async with self.database.write_session() as session:
            claimed = await session.scalar(
                insert(ExecutorHeartbeat)
                .values(executor_id=self.executor_id, started_at=now, last_seen=now)
                .on_conflict_do_update(
                    index_elements=[ExecutorHeartbeat.executor_id],
                    set_={"started_at": now, "last_seen": now},
                    where=ExecutorHeartbeat.last_seen < now - timedelta(seconds=self.dead_after_s),
                )
                .returning(ExecutorHeartbeat.executor_id)
            )
        return claimed is not None

    def start(self) -> None:
        """Beats and looks for the dead in two loops: a take-over (DBOS's recovery of many
        workflows) never delays this process's own beat, or it would look dead in turn."""
        self._tasks = [
            asyncio.create_task(self._every(self.beat), name="executor-heartbeat"),
            asyncio.create_task(self._every(self.take_over_dead), name="executor-take-over"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            await cancel_and_wait(task)
        self._tasks = []

    async def hand_back(self) -> None:
        """Dates this executor back, so that a survivor takes over its unfinished workflows at
        its next check; for a process that has stopped running them."""
        async with self.database.write_session() as session:
            await session.execute(
                update(ExecutorHeartbeat)
                .where(ExecutorHeartbeat.executor_id == self.executor_id)
                .values(last_seen=func.now() - timedelta(days=1))
            )

    async def _every(self, work: Callable[[], Awaitable[object]]) -> None:
        while True:
            try:
                await work()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("heartbeat_failed", executor_id=self.executor_id)
            await asyncio.sleep(self.interval_s)

    async def beat(self) -> None:
        now = func.now()
        async with self.database.write_session() as session:
            await session.execute(
                insert(ExecutorHeartbeat)
                .values(executor_id=self.executor_id, started_at=now, last_seen=now)
                .on_conflict_do_update(
                    index_elements=[ExecutorHeartbeat.executor_id], set_={"last_seen": now}
                )
            )

    async def take_over_dead(self) -> list[str]:
        """Recovers the workflows of every executor whose heartbeat is older than the bound;
        returns the executors taken over."""
        taken: list[str] = []
        async with self.database.write_session() as session:
            dead = list(
                await session.scalars(
                    select(ExecutorHeartbeat.executor_id)
                    .where(
                        ExecutorHeartbeat.last_seen
                        < func.now() - timedelta(seconds=self.dead_after_s),
                        ExecutorHeartbeat.executor_id != self.executor_id,
                    )
                    .with_for_update(skip_locked=True)
                )
            )
            for executor_id in dead:
                workflows = await self.recover(executor_id)
                await session.execute(
                    delete(ExecutorHeartbeat).where(ExecutorHeartbeat.executor_id == executor_id)
                )
                log.warning(
                    "executor_taken_over",
                    dead_executor=executor_id,
                    by=self.executor_id,
                    workflows=workflows,
                )
                taken.append(executor_id)
        return taken
