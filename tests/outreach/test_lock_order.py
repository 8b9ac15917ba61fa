"""On PostgreSQL, the dispatcher's claim and the transactions that meet it on a sender and a
user's credits take their locks in one order (sends, senders, credit balances): a claim
holding a sender and about to hold credits waits for, or is waited for by, a webhook batch
marking a step sent (spending credits) with a bounce that makes it check that sender's health,
and a send SendGrid refused (its cap slot and credits given back), instead of deadlocking.
The interleaving is forced: the claim's sender lock is taken first, the other transaction is
let run until PostgreSQL shows it waiting on a lock, and only then does the claim go on to
the user's credits. Taken in the old orders, each test fails with DeadlockDetected."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Coroutine
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text

from roleferry.outreach import billing
from roleferry.outreach.dispatch import TickResult
from roleferry.outreach.models import Sender, SequenceSend
from roleferry.payments.models import CreditEntry, CreditReservation
from roleferry.webhooks.effects import Effects
from roleferry.webhooks.models import InboxEvent
from tests.outreach.lab import Lab, open_lab
from tests.support.sandbox_server import SandboxServer

SENT_BEFORE = 20
"""The bounce-rate check looks at a sender's last 20 sends: with one of them bounced it
pauses the sender, which takes the sender's row lock."""


@pytest.fixture
async def lab(sb: SandboxServer, tmp_path: Path, postgres_url: str) -> AsyncIterator[Lab]:
    async for opened in open_lab(
        sb, tmp_path, database_url=postgres_url, billing="on", starting_credits=100
    ):
        yield opened


def people(prefix: str, n: int) -> list[dict[str, str]]:
    return [{"email": f"{prefix}{i}@example.org", "first_name": f"P{i}"} for i in range(n)]


async def sends(lab: Lab, state: str) -> list[SequenceSend]:
    async with lab.db.session() as session:
        return list(
            await session.scalars(
                select(SequenceSend).where(SequenceSend.state == state).order_by(SequenceSend.id)
            )
        )


async def someone_waits_on_a_lock(lab: Lab, seconds: float = 10) -> None:
    """Until another session of this test's database is blocked on a row lock."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with lab.db.session() as session:
            waiting = await session.scalar(
                text(
                    "select count(*) from pg_stat_activity where datname = current_database()"
                    " and wait_event_type = 'Lock'"
                )
            )
        if waiting:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the other transaction never waited on a lock")


async def against_a_claim(
    lab: Lab, sender_id: str, due_id: str, other: Coroutine[Any, Any, Any]
) -> None:
    """`other` runs while a claim holds the sender; once it waits on a lock, the claim holds
    the credits of the step `due_id` (its order: the sender row, then the user's credits)."""
    async with lab.db.write_session() as claim:
        await claim.execute(select(Sender.id).where(Sender.id == sender_id).with_for_update())
        running = asyncio.create_task(other)
        await someone_waits_on_a_lock(lab)
        await billing.lock_balances(claim, [lab.user_id])
        claimed = await claim.get(SequenceSend, due_id, with_for_update=True)
        assert claimed is not None
        claimed.attempts += 1
        assert await billing.hold(claim, lab.dispatcher.settings, claimed)
    await asyncio.wait_for(running, 30)


async def hold_of(lab: Lab, send_id: str, attempt: int) -> str | None:
    async with lab.db.session() as session:
        status: str | None = await session.scalar(
            select(CreditReservation.status).where(
                CreditReservation.reference == billing.reference(send_id, attempt)
            )
        )
        return status


async def test_a_claim_and_a_webhook_batch_do_not_deadlock(lab: Lab) -> None:
    sender = await lab.sender()
    sequence = await lab.sequence(sender, steps=1)
    await lab.enroll(sequence, people("sent", SENT_BEFORE))
    assert (await lab.tick()).sent == SENT_BEFORE
    await lab.enroll(sequence, people("flight", 1))
    # In flight: claimed (its credit held), SendGrid's `processed` not yet recorded.
    assert len(await lab.dispatcher.claim(lab.clock(), TickResult())) == 1
    [in_flight] = await sends(lab, "sending")
    bounced = (await sends(lab, "sent"))[0]
    await lab.enroll(sequence, people("next", 1))
    [due] = await sends(lab, "scheduled")
    at = lab.clock()
    events = [
        InboxEvent(
            1,
            "sendgrid",
            "ev-processed",
            "processed",
            at,
            {"send_id": in_flight.id, "email": in_flight.email, "sg_message_id": "m1.x"},
        ),
        InboxEvent(
            2,
            "sendgrid",
            "ev-bounce",
            "bounce",
            at + 1,
            {"send_id": bounced.id, "email": bounced.email, "sg_message_id": "m0.x"},
        ),
    ]

    async def webhook_batch() -> None:
        async with lab.db.write_session() as session:
            await Effects(session).apply_sendgrid(events)

    await against_a_claim(lab, sender.id, due.id, webhook_batch())

    async with lab.db.session() as session:
        paused = await session.get(Sender, sender.id)
        assert paused is not None
        assert (paused.paused, paused.paused_reason) == (True, "bounce_rate")
        recorded = await session.get(SequenceSend, in_flight.id)
        assert recorded is not None
        assert (recorded.state, recorded.message_id) == ("sent", "m1")
        spent = await session.scalar(
            select(func.count()).where(CreditEntry.reason == "spend:email_sent")
        )
        assert spent == SENT_BEFORE + 1
    assert await hold_of(lab, due.id, 1) == "open"


async def test_a_claim_and_a_refused_send_do_not_deadlock(lab: Lab) -> None:
    """SendGrid answers 429: the step goes back to `scheduled`, giving back its cap slot
    (the sender row) and its credits, while a claim holds that sender."""
    sender = await lab.sender()
    sequence = await lab.sequence(sender, steps=1)
    await lab.enroll(sequence, people("flight", 1))
    claimed = await lab.dispatcher.claim(lab.clock(), TickResult())
    assert len(claimed) == 1
    await lab.enroll(sequence, people("next", 1))
    [due] = await sends(lab, "scheduled")
    lab.sb.control("sendgrid", fail_next=1, error_status=429)
    result = TickResult()
    await against_a_claim(lab, sender.id, due.id, lab.dispatcher.send(claimed, result))
    assert result.retried == 1
    [refused] = [s for s in await sends(lab, "scheduled") if s.id == claimed[0].send_id]
    assert await hold_of(lab, refused.id, 1) == "closed"
    assert await hold_of(lab, due.id, 1) == "open"
    async with lab.db.session() as session:
        returned = await session.get(Sender, sender.id)
        assert returned is not None
        assert returned.sent_today == 0
    assert lab.mail() == []
