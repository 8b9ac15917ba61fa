"""Credits for sequence emails: exactly one `email_sent` per email in the simulator's mail
log, across a refused request, a death after SendGrid's 202 and a death before the call; a
user out of credits has the step wait (`waiting_for: credits`) and go once credits come."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from roleferry.outreach.dispatch import TickResult
from roleferry.outreach.models import Enrollment, TimelineEntry
from roleferry.payments.ledger import Balance, Ledger
from roleferry.payments.models import CreditEntry
from roleferry.resilience.deadline import Deadline
from tests.outreach.lab import Lab, open_lab
from tests.support.sandbox_server import SandboxServer


@pytest.fixture(params=["sqlite", "postgresql"])
async def billed(
    request: pytest.FixtureRequest, sb: SandboxServer, tmp_path: Path
) -> AsyncIterator[Lab]:
    """The lab with billing on: `email_sent` costs 1, a new user has 2 credits."""
    overrides: dict[str, object] = {"billing": "on", "starting_credits": 2}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    async for opened in open_lab(sb, tmp_path, **overrides):
        yield opened


def people(n: int) -> list[dict[str, str]]:
    return [{"email": f"c{i}@example.org", "first_name": f"C{i}"} for i in range(n)]


async def balance(lab: Lab) -> Balance:
    async with lab.db.session() as session:
        return await Ledger(session).balance(lab.user_id)


async def spends(lab: Lab) -> int:
    async with lab.db.session() as session:
        return int(
            await session.scalar(
                select(func.count()).where(CreditEntry.reason == "spend:email_sent")
            )
            or 0
        )


async def grant(lab: Lab, credits: int, reference: str) -> None:
    async with lab.db.write_session() as session:
        await Ledger(session).grant(lab.user_id, credits, reference)


async def test_out_of_credits_the_step_waits_with_a_clear_status_then_goes(
    billed: Lab,
) -> None:
    lab = billed
    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(3))
    result = await lab.tick()
    assert (result.sent, result.waiting["credits"]) == (2, 1)
    assert len(lab.mail()) == 2
    async with lab.db.session() as session:
        waiting = (
            await session.scalars(select(Enrollment).where(Enrollment.status == "active"))
        ).one()
    assert (waiting.status, waiting.waiting_for) == ("active", "credits")
    async with lab.db.session() as session:
        kinds = list(
            await session.scalars(
                select(TimelineEntry.kind).where(TimelineEntry.enrollment_id == waiting.id)
            )
        )
    assert "waiting_for_credits" in kinds
    assert "sending" not in kinds
    assert await balance(lab) == Balance(0, 0)
    lab.clock.advance(30)
    assert (await lab.tick()).claimed == 0, "not retried in a loop: due a minute later"
    await grant(lab, 3, "test:topup")
    lab.clock.advance(30)
    assert (await lab.tick()).sent == 1
    assert (await lab.enrollment(waiting.email)).waiting_for is None
    assert await balance(lab) == Balance(2, 0)
    assert await spends(lab) == len(lab.mail()) == 3


async def test_each_sent_email_costs_once_across_a_refusal_and_two_deaths(billed: Lab) -> None:
    lab = billed
    await grant(lab, 8, "test:topup")
    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(3))
    # SendGrid answers 429: nothing left, the holds go back, the steps are sent later.
    lab.sb.control("sendgrid", fail_next=1, error_status=429)
    first = await lab.tick()
    assert (first.sent, first.retried) == (0, 3)
    assert await balance(lab) == Balance(10, 0)
    sent = 0
    for _ in range(50):  # our budget pauses (in real time) after a 429
        lab.clock.advance(120)
        sent += (await lab.tick()).sent
        if sent == 3:
            break
        await asyncio.sleep(0.2)
    assert sent == 3
    assert await balance(lab) == Balance(7, 0)
    # A death between SendGrid's 202 and our record: the `processed` event records it.
    await lab.enroll(sequence, [{"email": "dies-after@example.org"}])
    claimed = await lab.dispatcher.claim(lab.clock(), TickResult())
    await lab.client.send_once(claimed[0].message, deadline=Deadline(10))
    assert (await balance(lab)).reserved == 1
    await lab.apply_all_events()
    # A death before the call: sent again after the ambiguity window, paid once.
    await lab.enroll(sequence, [{"email": "dies-before@example.org"}])
    assert len(await lab.dispatcher.claim(lab.clock(), TickResult())) == 1
    lab.clock.advance(lab.dispatcher.settings.sequence_ambiguity_s + 1)
    assert (await lab.tick()).sent == 1
    await lab.apply_all_events()
    mail = lab.mail()
    assert len(mail) == 5
    assert await spends(lab) == 5
    assert await balance(lab) == Balance(10 - 5, 0)
    assert await lab.states() == {"sent": 5}
    async with lab.db.session() as session:
        statuses = set(await session.scalars(select(Enrollment.status)))
    assert statuses == {"finished"}
