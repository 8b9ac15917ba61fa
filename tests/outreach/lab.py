"""A sequence lab: a migrated SQLite database, the real SendGrid client pointed at the sandbox
server, and the dispatcher on a clock the test moves. Delivery events the sandbox sends are
applied through the real webhook effects."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from roleferry import migrations
from roleferry.db import Database, DatabaseUrls
from roleferry.drafting.stream import model_chain
from roleferry.outreach import service
from roleferry.outreach.dispatch import Dispatcher, TickResult
from roleferry.outreach.models import Enrollment, Sender, SequenceDef, SequenceRun, SequenceSend
from roleferry.providers.registry import Providers
from roleferry.providers.sendgrid.client import SendGridClient
from roleferry.users import service as users
from roleferry.webhooks.effects import SENDGRID_FIELDS, Effects
from roleferry.webhooks.models import InboxEvent
from tests.conftest import make_settings
from tests.support.providers import providers_for
from tests.support.sandbox_server import SandboxServer

# Monday 2026-03-02 15:00 UTC: 10:00 in New York, 16:00 in Berlin.
MONDAY_15_UTC = 1_772_463_600.0


class Clock:
    def __init__(self, now: float = MONDAY_15_UTC) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Lab:
    sb: SandboxServer
    db: Database
    providers: Providers
    dispatcher: Dispatcher
    clock: Clock
    user_id: str
    events_seen: int = 0

    @property
    def client(self) -> SendGridClient:
        client: SendGridClient = self.providers.clients["sendgrid"]
        return client

    async def sender(self, **overrides: Any) -> Sender:
        values: dict[str, Any] = {
            "email": "auto1@rf-send-01.com",
            "daily_cap": 1000,
            "warmup_start": 1000,
            "warmup_step": 0,
            "min_gap_s": 0.0,
            "jitter_s": 0.0,
        }
        values.update(overrides)
        async with self.db.write_session() as session:
            sender = Sender(user_id=self.user_id, started_at=self.clock(), **values)
            session.add(sender)
        return sender

    async def sequence(self, sender: Sender, steps: int = 3, **overrides: Any) -> SequenceDef:
        values: dict[str, Any] = {
            "name": "test",
            "steps": [
                {
                    "delay_s": 0 if n == 0 else 86_400,
                    "subject": f"Step {n} for {{{{first_name}}}}",
                    "body": f"Hello {{{{first_name}}}} at {{{{company}}}}, step {n}.",
                }
                for n in range(steps)
            ],
            "window": {"days": [0, 1, 2, 3, 4, 5, 6], "start_hour": 0, "end_hour": 24},
            "timezone": "UTC",
            "stop_on": list(service.STOP_CONDITIONS),
            "domain_hourly_limit": 10_000,
        }
        values.update(overrides)
        async with self.db.write_session() as session:
            sequence = SequenceDef(user_id=self.user_id, sender_id=sender.id, **values)
            session.add(sequence)
        return sequence

    async def enroll(self, sequence: SequenceDef, contacts: list[dict[str, Any]]) -> SequenceRun:
        async with self.db.write_session() as session:
            return await service.enroll(session, sequence, contacts, [], self.clock())

    async def tick(self) -> TickResult:
        return await self.dispatcher.tick()

    def mail(self, email: str | None = None) -> list[dict[str, Any]]:
        params = {"email": email} if email else {}
        rows: list[dict[str, Any]] = httpx.get(
            f"{self.sb.url}/sandbox/_control/sendgrid/mail", params=params
        ).json()
        return rows

    def put_on_list(self, kind: str, email: str) -> None:
        """Puts an address on one of SendGrid's suppression lists (sandbox control)."""
        httpx.post(
            f"{self.sb.url}/sandbox/_control/sendgrid/suppressions/{kind}", json={"emails": [email]}
        ).raise_for_status()

    async def apply_events(self, wait_for: int = 0, timeout: float = 10) -> int:
        """Applies the delivery events the sandbox has sent since the last call, through
        the real effects; waits until at least `wait_for` new events arrived."""
        deadline = time.monotonic() + timeout
        while True:
            payloads = [
                event
                for _headers, body in self.sb.caught.of("sendgrid")
                for event in json.loads(body)
            ]
            if len(payloads) - self.events_seen >= wait_for or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        fresh = payloads[self.events_seen :]
        self.events_seen = len(payloads)
        events = [
            InboxEvent(
                0,
                "sendgrid",
                str(p["sg_event_id"]),
                str(p["event"]),
                float(p["timestamp"]),
                {f: str(p[f]) for f in SENDGRID_FIELDS if p.get(f) is not None},
            )
            for p in fresh
        ]
        if events:
            async with self.db.write_session() as session:
                await Effects(session).apply_sendgrid(events)
        return len(events)

    async def apply_all_events(self, timeout: float = 10) -> None:
        """Waits for the `processed` event of every mail in the log, then applies them."""
        wanted = {m["custom_args"]["send_id"] for m in self.mail()}
        deadline = time.monotonic() + timeout
        while True:
            seen = {
                event.get("send_id")
                for _headers, body in self.sb.caught.of("sendgrid")
                for event in json.loads(body)
                if event["event"] == "processed"
            }
            if wanted <= seen or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        await self.apply_events()

    async def states(self) -> dict[str, int]:
        async with self.db.session() as session:
            rows = await session.execute(
                select(SequenceSend.state, func.count()).group_by(SequenceSend.state)
            )
            return dict(rows.all())  # type: ignore[arg-type]

    async def enrollment(self, email: str) -> Enrollment:
        async with self.db.session() as session:
            found = await session.scalar(select(Enrollment).where(Enrollment.email == email))
            assert found is not None
            return found


async def open_lab(sb: SandboxServer, tmp_path: Path, **overrides: Any) -> AsyncIterator[Lab]:
    settings = make_settings(tmp_path, sequence_dispatch=False, **overrides)
    overrides.pop("database_url", None)
    urls = DatabaseUrls(settings.database_url)
    migrations.upgrade(urls.render(urls.sync_url))
    db = Database(settings.database_url)
    providers = providers_for(sb, tmp_path, **overrides)
    clock = Clock()
    async with db.session() as session:
        user = await users.create_user(session, "owner@example.com")
    dispatcher = Dispatcher(
        db,
        providers.clients["sendgrid"],
        settings,
        "http://roleferry.test",
        clock,
        chain=model_chain(providers, settings),
    )
    try:
        yield Lab(sb, db, providers, dispatcher, clock, user.user.id)
    finally:
        await providers.aclose()
        await db.dispose()
