"""Exactly once under the conditions providers create: 10,000 events with 30% duplicates,
shuffled, from concurrent senders; and the same with the server killed (SIGKILL) mid-stream
while the senders keep retrying, as SendGrid does."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach.models import OutreachMessage
from roleferry.users import service
from roleferry.webhooks.models import WebhookEvent
from tests.conftest import free_port, start_roleferry
from tests.support.live_server import live_server
from tests.support.webhooks import dumps, in_db, sendgrid_event, sendgrid_headers

MESSAGES = 100
UNIQUE = 7_000
DUPLICATES = 3_000
BATCH = 100
SENDERS = 8


def seed_messages(database_url: str) -> None:
    async def go(session: AsyncSession) -> None:
        owner = await service.create_user(session, f"sender-{random.random()}@example.com")
        for i in range(MESSAGES):
            session.add(
                OutreachMessage(
                    id=f"out_{i}",
                    user_id=owner.user.id,
                    message_id=f"MSG{i}",
                    email=f"m{i}@example.com",
                )
            )

    in_db(database_url, go)


async def poison_suppressions(session: AsyncSession) -> None:
    """A trigger that refuses one address: its event's effect fails in the database."""
    await session.execute(
        text(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.email = 'poison@example.com' THEN RAISE EXCEPTION 'poisoned'; END IF; "
            "RETURN NEW; END $$"
        )
    )
    await session.execute(
        text(
            "CREATE TRIGGER poison BEFORE INSERT ON suppressions "
            "FOR EACH ROW EXECUTE FUNCTION poison()"
        )
    )


def make_batches(seed: int) -> tuple[list[list[dict[str, Any]]], Counter[str]]:
    rng = random.Random(seed)
    unique = []
    expected: Counter[str] = Counter()
    for _ in range(UNIQUE):
        i = rng.randrange(MESSAGES)
        unique.append(sendgrid_event("open", f"m{i}@example.com", outreach_id=f"out_{i}"))
        expected[f"out_{i}"] += 1
    events = unique + [rng.choice(unique) for _ in range(DUPLICATES)]
    rng.shuffle(events)
    return [events[i : i + BATCH] for i in range(0, len(events), BATCH)], expected


def send_all(
    url: Callable[[], str], batches: list[list[dict[str, Any]]], stop_after: float = 120
) -> int:
    """SENDERS threads post every batch, retrying each until it is acknowledged."""
    queue = list(enumerate(batches))
    lock = threading.Lock()
    retries = [0]
    deadline = time.monotonic() + stop_after

    def sender() -> None:
        with httpx.Client(timeout=10) as client:
            while True:
                with lock:
                    if not queue:
                        return
                    _, batch = queue.pop()
                body = dumps(batch)
                while time.monotonic() < deadline:
                    try:
                        response = client.post(
                            f"{url()}/webhooks/sendgrid",
                            content=body,
                            headers=sendgrid_headers(body),
                        )
                        if response.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    with lock:
                        retries[0] += 1
                    time.sleep(0.2)

    threads = [threading.Thread(target=sender) for _ in range(SENDERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return retries[0]


def wait_all_applied(database_url: str, timeout: float = 60, parked: int = 0) -> None:
    """Until every event is applied but the `parked` ones, which end `failed`."""

    async def unapplied(session: AsyncSession) -> Counter[str]:
        rows = await session.execute(
            select(WebhookEvent.status, func.count())
            .where(WebhookEvent.status != "applied")
            .group_by(WebhookEvent.status)
        )
        return Counter(dict(rows.all()))

    deadline = time.monotonic() + timeout
    while in_db(database_url, unapplied) != Counter({"failed": parked} if parked else {}):
        assert time.monotonic() < deadline, "events left unapplied"
        time.sleep(0.2)


def assert_applied_exactly_once(database_url: str, expected: Counter[str], parked: int = 0) -> None:
    async def read(session: AsyncSession) -> tuple[int, dict[str, int]]:
        events = int(await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)
        opens = {m.id: m.opens for m in await session.scalars(select(OutreachMessage))}
        return events, opens

    stored, opens = in_db(database_url, read)
    assert stored == UNIQUE + parked, "every unique event stored once, no duplicate stored"
    assert sum(opens.values()) == UNIQUE, "every event applied once"
    assert opens == {m: expected.get(m, 0) for m in opens}


def test_10000_events_30_percent_duplicates_shuffled_concurrent(tmp_path: Path) -> None:
    batches, expected = make_batches(seed=1)
    with live_server(tmp_path) as live:
        url = live.runtime.settings.database_url
        seed_messages(url)
        send_all(lambda: live.url, batches)
        wait_all_applied(url)
        assert_applied_exactly_once(url, expected)


def test_sigkill_mid_stream_loses_nothing_and_applies_nothing_twice(
    env: dict[str, str], tmp_path: Path
) -> None:
    batches, expected = make_batches(seed=2)
    database_url = env["ROLEFERRY_DATABASE_URL"]
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def start() -> subprocess.Popen[str]:
        return start_roleferry(["serve"], env, tmp_path, port)

    first = start()
    seed_messages(database_url)
    killed = threading.Event()
    second: list[subprocess.Popen[str]] = []

    def killer() -> None:
        async def stored(session: AsyncSession) -> int:
            return int(await session.scalar(select(func.count()).select_from(WebhookEvent)) or 0)

        while in_db(database_url, stored) < UNIQUE // 3:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        killed.set()
        time.sleep(0.5)
        second.append(start())

    chaos = threading.Thread(target=killer)
    chaos.start()
    retries = send_all(lambda: url, batches)
    chaos.join()
    try:
        assert killed.is_set(), "the server died mid-stream"
        assert retries > 0, "and the senders retried"
        wait_all_applied(database_url)
        assert_applied_exactly_once(database_url, expected)
    finally:
        second[0].terminate()
        second[0].wait(20)


@pytest.mark.postgres
def test_on_postgresql_two_processes_share_the_inbox_and_apply_each_event_once(
    env: dict[str, str], tmp_path: Path, postgres_url: str
) -> None:
    """The scale-out shape: two `serve` processes on one PostgreSQL database, deliveries to
    either, processors claiming batches with SKIP LOCKED; one poisoned event (the database
    refuses its effect) is tried 3 times and parked as failed while all the others apply."""
    batches, expected = make_batches(seed=3)
    poisoned = sendgrid_event("bounce", "poison@example.com")
    batches[len(batches) // 2].append(poisoned)
    servers = []
    urls = []
    try:
        for name in ("a", "b"):
            data = tmp_path / name
            data.mkdir()
            port = free_port()
            own = {
                **env,
                "ROLEFERRY_DATABASE_URL": postgres_url,
                "ROLEFERRY_DATA_DIR": str(data),
                "ROLEFERRY_WEBHOOK_RETRY_BACKOFF_S": "0.1",
                "ROLEFERRY_WEBHOOK_MAX_ATTEMPTS": "3",
            }
            servers.append(start_roleferry(["serve"], own, data, port))
            urls.append(f"http://127.0.0.1:{port}")
        seed_messages(postgres_url)
        in_db(postgres_url, poison_suppressions)
        send_all(lambda: random.choice(urls), batches)
        wait_all_applied(postgres_url, parked=1)
        assert_applied_exactly_once(postgres_url, expected, parked=1)

        async def parked(session: AsyncSession) -> tuple[str, int]:
            row = (
                await session.execute(
                    select(WebhookEvent.status, WebhookEvent.attempts).where(
                        WebhookEvent.event_id == poisoned["sg_event_id"]
                    )
                )
            ).one()
            return row.status, row.attempts

        assert in_db(postgres_url, parked) == ("failed", 3)
    finally:
        for server in servers:
            server.terminate()
            server.wait(20)
