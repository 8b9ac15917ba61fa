"""Each process its own DBOS executor; a dead executor's workflows taken over once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from roleferry.db import Database
from roleferry.executors import ExecutorHeartbeat, ExecutorInUse, Heartbeat
from roleferry.runtime import Runtime
from tests.conftest import make_settings


def test_sqlite_keeps_one_executor_so_a_restart_recovers_its_own_work(tmp_path: Path) -> None:
    """One process owns a SQLite deployment: the id stays 'local' across restarts."""
    assert Runtime(make_settings(tmp_path)).executor_id == "local"


@pytest.mark.postgres
def test_every_postgres_process_gets_an_executor_id_of_its_own(
    tmp_path: Path, postgres_url: str
) -> None:
    """Without one, DBOS uses 'local' everywhere and a restarted process recovers (and runs a
    second time) the workflows every other live process is running."""
    settings = make_settings(tmp_path, database_url=postgres_url)
    ids = {Runtime(settings).executor_id for _ in range(3)}
    assert len(ids) == 3
    assert "local" not in ids
    chosen = make_settings(tmp_path, database_url=postgres_url, executor_id="worker-7")
    assert Runtime(chosen).executor_id == "worker-7"


@pytest.mark.postgres
def test_the_executor_id_reaches_dbos(tmp_path: Path, postgres_url: str) -> None:
    """The runtime's id is the one DBOS records on the workflows this process runs."""
    from dbos import DBOS

    runtime = Runtime(make_settings(tmp_path, database_url=postgres_url))
    runtime.migrate()

    async def run() -> str:
        await runtime.start()
        try:
            return str(DBOS.executor_id)
        finally:
            await runtime.stop()

    assert asyncio.run(run()) == runtime.executor_id


async def _heartbeats(
    url: str, names: list[str], recovered: list[str], recover_s: float = 0.3
) -> list[Heartbeat]:
    async def recover(executor_id: str) -> int:
        recovered.append(executor_id)
        await asyncio.sleep(recover_s)  # holds the row lock while another survivor looks
        return 1

    return [Heartbeat(Database(url), name, recover, 0.1, 1.0) for name in names]


@pytest.mark.postgres
def test_a_dead_executor_is_taken_over_by_one_survivor_only(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two survivors check at once: one recovers the dead executor's workflows, once."""
    Runtime(make_settings(tmp_path, database_url=postgres_url)).migrate()
    recovered: list[str] = []

    async def run() -> tuple[list[str], list[str]]:
        dead, a, b = await _heartbeats(postgres_url, ["dead", "a", "b"], recovered)
        for beat in (dead, a, b):
            await beat.claim()
        assert await a.take_over_dead() == [], "a fresh heartbeat is alive"
        await asyncio.sleep(1.2)  # "dead" stops beating; a and b beat
        await a.beat()
        await b.beat()
        taken = await asyncio.gather(a.take_over_dead(), b.take_over_dead())
        async with a.database.session() as session:
            left = list(await session.scalars(select(ExecutorHeartbeat.executor_id)))
        for beat in (dead, a, b):
            await beat.database.dispose()
        return [x for t in taken for x in t], sorted(left)

    taken, left = asyncio.run(run())
    assert taken == ["dead"]
    assert recovered == ["dead"]
    assert left == ["a", "b"]


@pytest.mark.postgres
def test_a_long_take_over_does_not_hold_back_the_survivors_own_heartbeat(
    tmp_path: Path, postgres_url: str
) -> None:
    """Recovering a dead executor's workflows can take longer than the bound: the survivor
    keeps beating meanwhile, so no other process takes it for dead in turn (a cascade that
    moved one job between every process of a loaded cluster)."""
    Runtime(make_settings(tmp_path, database_url=postgres_url)).migrate()
    recovered: list[str] = []

    async def run() -> list[str]:
        beats = await _heartbeats(postgres_url, ["gone", "survivor", "watcher"], recovered, 2.5)
        gone, survivor, watcher = beats
        for beat in beats:
            await beat.claim()
        await gone.hand_back()
        survivor.start()
        try:
            await asyncio.sleep(2.0)  # the survivor is recovering "gone" for 2.5 s
            taken = await watcher.take_over_dead()
        finally:
            await survivor.stop()
            for beat in beats:
                await beat.database.dispose()
        return taken

    assert asyncio.run(run()) == []
    assert recovered == ["gone"]


@pytest.mark.postgres
def test_a_live_executor_id_is_refused_to_a_second_process(
    tmp_path: Path, postgres_url: str
) -> None:
    """Two processes given one ROLEFERRY_EXECUTOR_ID: the second waits for the first's
    heartbeat to go stale, and refuses to start while it keeps beating."""
    Runtime(make_settings(tmp_path, database_url=postgres_url)).migrate()

    async def run() -> None:
        first, second = await _heartbeats(postgres_url, ["same", "same"], [])
        await first.claim()
        first.start()
        try:
            with pytest.raises(ExecutorInUse, match="ROLEFERRY_EXECUTOR_ID"):
                await second.claim()
        finally:
            await first.stop()
        await second.claim()  # once the first is silent for the bound, the id is free
        for beat in (first, second):
            await beat.database.dispose()

    asyncio.run(run())
