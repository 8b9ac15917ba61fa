"""On PostgreSQL, the dispatcher's claim and a webhook batch take their locks in one order
(sends, senders, credit balances): a claim holding a sender and about to hold credits, and a
batch marking a step sent (spending credits) with a bounce that makes it check that sender's
health, wait for each other instead of deadlocking. The interleaving is forced: the claim's
sender lock is taken first, the batch is let run until PostgreSQL shows it waiting on a lock,
and only then does the claim go on to the user's credits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

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


async def waiting_on_a_lock(lab: Lab, pid: int, seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with lab.db.session() as session:
            wait = await session.scalar(
                text("select wait_event_type from pg_stat_activity where pid = :pid"),
                {"pid": pid},
            )
        if wait == "Lock":
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the webhook batch never waited on a lock")


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
    batch_pid: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def webhook_batch() -> None:
        async with lab.db.write_session() as session:
            batch_pid.set_result(int(await session.scalar(text("select pg_backend_pid()"))))
            await Effects(session).apply_sendgrid(events)

    async with lab.db.write_session() as claim:
        # The claim's order: the sender row, then the user's credits.
        await claim.execute(select(Sender.id).where(Sender.id == sender.id).with_for_update())
        batch = asyncio.create_task(webhook_batch())
        await waiting_on_a_lock(lab, await asyncio.wait_for(batch_pid, 10))
        await billing.lock_balances(claim, [lab.user_id])
        claimed = await claim.get(SequenceSend, due.id, with_for_update=True)
        assert claimed is not None
        claimed.attempts += 1
        assert await billing.hold(claim, lab.dispatcher.settings, claimed)
    await asyncio.wait_for(batch, 30)

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
        held = await session.scalar(
            select(CreditReservation.status).where(
                CreditReservation.reference == billing.reference(due.id, 1)
            )
        )
        assert held == "open"
