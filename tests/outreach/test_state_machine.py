"""Hypothesis drives the step state machine through claims, sends, process deaths (claimed
work dropped), replies, suppressions, pauses, cancels, delivery events and clock jumps; after
every step each send has moved only along allowed transitions, no send was mailed twice, and
a send's state agrees with the simulator's mail log."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from sqlalchemy import select

from roleferry.outreach import service, suppressions
from roleferry.outreach.dispatch import Claimed, TickResult
from roleferry.outreach.models import Enrollment, SequenceSend
from roleferry.payments.models import CreditEntry, CreditReservation
from tests.conftest import postgres_database
from tests.outreach.lab import Lab, open_lab
from tests.support.sandbox_server import SandboxServer

EMAILS = [f"m{i}@example.org" for i in range(6)]


def reachable(source: str, target: str) -> bool:
    seen, todo = {source}, [source]
    while todo:
        for nxt in service.TRANSITIONS[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return target in seen


def run_machine(sb: SandboxServer, tmp_path: Path, database: str) -> None:
    counter = iter(range(10**6))

    class Steps(RuleBasedStateMachine):
        @initialize()
        def start(self) -> None:
            self.loop = asyncio.new_event_loop()
            sb_reset(sb)
            folder = tmp_path / f"m{next(counter)}"
            folder.mkdir()
            overrides: dict[str, Any] = {"billing": "on", "starting_credits": 10_000}
            if database == "postgresql":
                self.pg = postgres_database()
                overrides["database_url"] = self.pg.__enter__()
            self.gen = open_lab(sb, folder, **overrides)
            self.lab: Lab = self.loop.run_until_complete(anext(self.gen))
            self.loop.run_until_complete(self._setup())
            self.in_flight: list[Claimed] = []
            self.last: dict[str, str] = {}
            self.cap: dict[str, int] = {}
            """Once stopped or blocked: the mails an address had plus those then in flight."""

        async def _setup(self) -> None:
            sequence = await self.lab.sequence(await self.lab.sender(), steps=3)
            await self.lab.enroll(sequence, [{"email": e} for e in EMAILS])

        def run(self, coro: Any) -> Any:
            return self.loop.run_until_complete(coro)

        @rule()
        def claim(self) -> None:
            result = TickResult()
            claimed = self.run(self.lab.dispatcher.claim(self.lab.clock(), result))
            self.in_flight += self.run(self.lab.dispatcher.recheck(claimed, result))

        @rule(count=st.integers(1, len(EMAILS)))
        def send_some(self, count: int) -> None:
            batch, self.in_flight = self.in_flight[:count], self.in_flight[count:]
            for item in batch:
                self.run(self.lab.dispatcher.send([item], TickResult()))

        @rule()
        def crash(self) -> None:
            """The process dies: whatever was claimed and not yet sent is forgotten."""
            self.in_flight = []

        @rule()
        def crash_after_sendgrid_accepted(self) -> None:
            """The process dies between SendGrid's 202 and our commit."""
            if self.in_flight:
                item = self.in_flight.pop(0)
                self.run(self.lab.client.send_once(item.message, deadline=_deadline()))

        @rule()
        def tick(self) -> None:
            self.run(self.lab.tick())

        @rule()
        def deliver_events(self) -> None:
            self.run(self.lab.apply_all_events())

        @rule(seconds=st.sampled_from([1.0, 86_400.0, 700.0]))
        def advance(self, seconds: float) -> None:
            # Events arrive within the ambiguity window (the documented assumption).
            self.run(self.lab.apply_all_events())
            self.lab.clock.advance(seconds)

        @rule(email=st.sampled_from(EMAILS))
        def suppress_globally(self, email: str) -> None:
            """SendGrid's lists synced: only the list changes; the claim must see it."""
            had = len(self.lab.mail(email))
            flying = sum(c.email == email for c in self.in_flight)
            self.cap.setdefault(email, had + flying)
            self.run(self._suppress(email))

        async def _suppress(self, email: str) -> None:
            async with self.lab.db.write_session() as session:
                await suppressions.add(session, [email], "bounce", "test")

        @rule(email=st.sampled_from(EMAILS), what=st.sampled_from(["reply", "block", "cancel"]))
        def end(self, email: str, what: str) -> None:
            self.run(self._end(email, what))

        async def _end(self, email: str, what: str) -> None:
            now = self.lab.clock()
            if what in ("reply", "block"):
                had = len(self.lab.mail(email))
                flying = sum(c.email == email for c in self.in_flight)
                self.cap.setdefault(email, had + flying)
            async with self.lab.db.write_session() as session:
                enrollment = await session.scalar(
                    select(Enrollment).where(Enrollment.email == email)
                )
                assert enrollment is not None
                if enrollment.status not in service.ACTIVE:
                    return
                if what == "reply":
                    await service.reply(session, enrollment, now, "test")
                elif what == "block":
                    await suppressions.block(session, self.lab.user_id, email, "blocklist", now)
                else:
                    await service.end_enrollments(session, [enrollment.id], "cancelled", now)

        @rule(email=st.sampled_from(EMAILS), pause=st.booleans())
        def pause(self, email: str, pause: bool) -> None:
            self.run(self._pause(email, pause))

        async def _pause(self, email: str, pause: bool) -> None:
            async with self.lab.db.write_session() as session:
                enrollment = await session.scalar(
                    select(Enrollment).where(Enrollment.email == email)
                )
                assert enrollment is not None
                if pause and enrollment.status == "active":
                    await service.pause(session, enrollment, self.lab.clock())
                elif not pause and enrollment.status == "paused":
                    await service.resume(session, enrollment, self.lab.clock())

        @invariant()
        def consistent(self) -> None:
            if not hasattr(self, "lab"):
                return
            sends = self.run(self._sends())
            mailed = Counter(m["custom_args"]["send_id"] for m in self.lab.mail())
            assert [s for s, n in mailed.items() if n > 1] == [], "a step went twice"
            per_address = Counter(m["email"] for m in self.lab.mail())
            for email, cap in self.cap.items():
                assert per_address[email] <= cap, f"{email} mailed after its stop or block"
            for send in sends:
                assert send.state in service.SEND_STATES
                before = self.last.get(send.id, "scheduled")
                assert before == send.state or reachable(before, send.state), (
                    before,
                    send.state,
                )
                if send.state == "sent" and send.message_id:
                    assert mailed[send.id] == 1
                if send.state in ("suppressed", "cancelled", "failed"):
                    assert mailed[send.id] == 0, (send.state, send.outcome)
                self.last[send.id] = send.state
            spent, open_holds = self.run(self._credits())
            assert spent == Counter(s.id for s in sends if s.state == "sent"), (
                "one charge a sent step"
            )
            assert open_holds == Counter(s.id for s in sends if s.state == "sending")

        async def _credits(self) -> tuple[Counter[str], Counter[str]]:
            """Spends and open holds of `email_sent`, by send id."""
            async with self.lab.db.session() as session:
                spent = Counter(
                    ref.split(":")[1]
                    for ref in await session.scalars(
                        select(CreditEntry.reference).where(
                            CreditEntry.reason == "spend:email_sent"
                        )
                    )
                )
                held = Counter(
                    ref.split(":")[1]
                    for ref in await session.scalars(
                        select(CreditReservation.reference).where(
                            CreditReservation.status == "open"
                        )
                    )
                )
            return spent, held

        async def _sends(self) -> list[SequenceSend]:
            async with self.lab.db.session() as session:
                return list(await session.scalars(select(SequenceSend)))

        def teardown(self) -> None:
            if hasattr(self, "gen"):
                self.loop.run_until_complete(self.gen.aclose())
            if hasattr(self, "loop"):
                self.loop.close()
            if hasattr(self, "pg"):
                self.pg.__exit__(None, None, None)

    Steps.TestCase.settings = settings(
        max_examples=12,
        stateful_step_count=25,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
    )
    Steps.TestCase().runTest()


def sb_reset(sb: SandboxServer) -> None:
    import httpx

    httpx.post(f"{sb.url}/sandbox/_control/reset").raise_for_status()
    sb.control("sendgrid", flush_interval_s=0.05, duplicate_rate=0.0, reorder_rate=0.0)
    sb.caught.clear()


def _deadline() -> Any:
    from roleferry.resilience.deadline import Deadline

    return Deadline(10)


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_step_state_machine(sb: SandboxServer, tmp_path: Path, database: str) -> None:
    """Random interleavings of claims, sends, deaths, stops and events keep every send on
    the allowed transitions, mailed at most once, in agreement with the mail log, charged
    once if sent and never otherwise (a hold open only while it is `sending`); on
    SQLite and on PostgreSQL (a fresh database per example)."""
    random.seed(14)
    run_machine(sb, tmp_path, database)
