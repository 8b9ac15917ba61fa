"""The dispatcher against the SendGrid simulator's mail log, on a clock the test moves."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from roleferry.notifications.models import Notification
from roleferry.outreach import service
from roleferry.outreach.models import Sender, SequenceSend, Suppression, UserBlock
from tests.outreach.lab import Lab

DAY = 86_400.0


def people(n: int, domain: str = "example.org") -> list[dict[str, str]]:
    return [
        {"email": f"p{i}@{domain}", "first_name": f"Ann{i}", "company": "Acme"} for i in range(n)
    ]


async def test_each_step_goes_once_after_its_delay_with_custom_args_and_unsubscribe(
    lab: Lab,
) -> None:
    """3 contacts x 3 steps: a step goes only after its delay, once, rendered, carrying
    custom_args (strings), reply_to the user's address and RFC 8058 headers."""
    sequence = await lab.sequence(await lab.sender(), steps=3)
    run = await lab.enroll(sequence, people(3))
    assert (await lab.tick()).sent == 3
    assert (await lab.tick()).claimed == 0
    lab.clock.advance(DAY - 1)
    assert (await lab.tick()).claimed == 0, "step 1 is not due before its delay"
    lab.clock.advance(1)
    assert (await lab.tick()).sent == 3
    lab.clock.advance(DAY)
    assert (await lab.tick()).sent == 3
    mail = lab.mail()
    assert len(mail) == 9
    assert Counter(m["email"] for m in mail) == {f"p{i}@example.org": 3 for i in range(3)}
    first = lab.mail("p1@example.org")[0]
    assert first["subject"] == "Step 0 for Ann1"
    assert first["reply_to"] == "owner@example.com"
    assert first["from"] == "auto1@rf-send-01.com"
    assert first["custom_args"]["step"] == "0"
    assert set(first["custom_args"]) == {"send_id", "enrollment_id", "step"}
    assert first["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert first["headers"]["List-Unsubscribe"].startswith("<http://roleferry.test/unsubscribe/")
    assert await lab.states() == {"sent": 9}
    async with lab.db.session() as session:
        summary = await service.run_summary(session, run.id)
        notes = list(await session.scalars(select(Notification)))
    assert summary["enrollments"] == {"finished": 3}
    assert [n.kind for n in notes] == ["sequence_run.finished"], "told once, at the end"


async def test_window_in_the_recipients_zone_else_the_sequences_across_dst(lab: Lab) -> None:
    """Weekdays 09-17: a New York contact waits for 09:00 New York, a contact without a zone
    for 09:00 in the sequence's Berlin; after the US DST change 09:00 is still 09:00 local."""
    window = {"days": [0, 1, 2, 3, 4], "start_hour": 9, "end_hour": 17}
    sequence = await lab.sequence(
        await lab.sender(), steps=2, window=window, timezone="Europe/Berlin"
    )
    # Friday 2026-03-06 23:00 UTC: 18:00 in New York, 00:00 Saturday in Berlin: both closed.
    lab.clock.now = 1_772_838_000.0
    await lab.enroll(
        sequence,
        [
            {"email": "ny@example.org", "timezone": "America/New_York"},
            {"email": "eu@example.org"},
        ],
    )
    assert (await lab.tick()).claimed == 0
    async with lab.db.session() as session:
        due = dict(
            (
                await session.execute(
                    select(SequenceSend.email, SequenceSend.due_at).where(SequenceSend.step == 0)
                )
            ).all()
        )
    # Monday 2026-03-09: Berlin 09:00 = 08:00 UTC (CET); New York 09:00 = 13:00 UTC (EDT
    # since Sunday 8 March; it was 14:00 UTC the week before).
    assert due["eu@example.org"] == 1_773_043_200.0
    assert due["ny@example.org"] == 1_773_061_200.0
    lab.clock.now = 1_773_043_200.0
    assert [m["email"] for m in lab.mail()] == []
    assert (await lab.tick()).sent == 1
    assert [m["email"] for m in lab.mail()] == ["eu@example.org"]
    lab.clock.now = 1_773_061_200.0 - 1
    assert (await lab.tick()).claimed == 0
    lab.clock.advance(1)
    assert (await lab.tick()).sent == 1


async def test_daily_cap_follows_the_warm_up_ramp(lab: Lab) -> None:
    """Start 2/day, +1/day, cap 3: 2 on day 0, 3 on day 1, 3 on day 2, the rest later."""
    sender = await lab.sender(daily_cap=3, warmup_start=2, warmup_step=1)
    sequence = await lab.sequence(sender, steps=1)
    await lab.enroll(sequence, people(10))
    per_day = []
    for _ in range(3):
        await lab.tick()
        per_day.append(len(lab.mail()) - sum(per_day))
        lab.clock.advance(DAY)
    assert per_day == [2, 3, 3]


async def due_times(lab: Lab) -> list[float]:
    async with lab.db.session() as session:
        return sorted(
            await session.scalars(
                select(SequenceSend.due_at).where(SequenceSend.state == "scheduled")
            )
        )


async def test_daily_cap_and_warm_up_count_the_senders_local_days_across_dst(lab: Lab) -> None:
    """A New York sender, 2/day +1/day: Saturday 18:00 New York (23:00 UTC) it sends 2; at
    20:00 New York the UTC day has changed but its day has not, so nothing more goes until
    its midnight (05:00 UTC); the DST Sunday is 23 hours long, so Monday starts at 04:00 UTC."""
    lab.clock.now = 1_772_924_400.0  # Saturday 2026-03-07 23:00 UTC
    sender = await lab.sender(
        daily_cap=100, warmup_start=2, warmup_step=1, timezone="America/New_York"
    )
    await lab.enroll(await lab.sequence(sender, steps=1), people(12))
    assert (await lab.tick()).sent == 2
    lab.clock.advance(2 * 3600)
    assert (await lab.tick()).sent == 0, "a new UTC day, the same New York day"
    sunday = 1_772_946_000.0  # 2026-03-08 00:00 New York (EST)
    assert all(sunday <= due <= sunday + 600 for due in await due_times(lab))
    lab.clock.now = sunday + 600
    assert (await lab.tick()).sent == 3
    monday = 1_773_028_800.0  # 2026-03-09 00:00 New York (EDT): 23 hours later
    assert all(monday <= due <= monday + 600 for due in await due_times(lab))
    lab.clock.now = monday + 600
    assert (await lab.tick()).sent == 4


async def test_steps_due_together_go_as_one_request_each_with_its_own_content(
    lab: Lab,
) -> None:
    """25 contacts due at once: one mail/send request with 25 personalizations, each copy
    with its own name in subject and body, its own send_id and unsubscribe link."""
    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(25))
    result = await lab.tick()
    assert (result.sent, result.requests) == (25, 1)
    mail = lab.mail()
    assert len({m["message_id"] for m in mail}) == 1
    for m in mail:
        n = m["email"][1 : m["email"].index("@")]
        assert m["subject"] == f"Step 0 for Ann{n}"
        assert m["body"] == f"Hello Ann{n} at Acme, step 0."
    assert len({m["custom_args"]["send_id"] for m in mail}) == 25
    assert len({m["headers"]["List-Unsubscribe"] for m in mail}) == 25


async def test_a_batch_sendgrid_refuses_is_sent_one_by_one(lab: Lab) -> None:
    """A 400 for the whole request proves nothing went: each step is tried alone, so only
    a step SendGrid refuses on its own fails."""
    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(3))
    lab.sb.control("sendgrid", fail_next=2, error_status=400)
    result = await lab.tick()
    assert (result.sent, result.ended["failed"], result.requests) == (2, 1, 4)
    assert len(lab.mail()) == 2


async def test_minimum_gap_between_two_sends_of_a_sender_with_jitter(lab: Lab) -> None:
    """A 60 s gap with up to 30 s jitter: one send per claim, the next 60-90 s later."""
    sequence = await lab.sequence(await lab.sender(min_gap_s=60, jitter_s=30), steps=1)
    await lab.enroll(sequence, people(3))
    assert (await lab.tick()).sent == 1
    async with lab.db.session() as session:
        sender = await session.scalar(select(Sender))
        assert sender is not None
        gap = sender.next_free_at - lab.clock()
    assert 60 <= gap <= 90
    lab.clock.advance(59)
    assert (await lab.tick()).sent == 0
    lab.clock.advance(gap - 59)
    assert (await lab.tick()).sent == 1


async def test_recipient_domain_hourly_limit(lab: Lab) -> None:
    """At most `domain_hourly_limit` sends to one domain per hour; other domains go."""
    sequence = await lab.sequence(await lab.sender(), steps=1, domain_hourly_limit=2)
    await lab.enroll(sequence, people(4, "busy.org") + people(1, "other.org"))
    await lab.tick()
    assert Counter(m["email"].split("@")[1] for m in lab.mail()) == {"busy.org": 2, "other.org": 1}
    lab.clock.advance(3600)
    await lab.tick()
    assert len(lab.mail()) == 5


async def test_suppressed_and_blocked_addresses_are_never_mailed(lab: Lab) -> None:
    """Global suppressions and the user's blocklist: the step ends `suppressed`, the
    enrolment stops, nothing reaches SendGrid; the identity holds."""
    sequence = await lab.sequence(await lab.sender(), steps=3)
    await lab.enroll(sequence, people(4))
    async with lab.db.write_session() as session:
        session.add(Suppression(email="p0@example.org", reason="bounce", source_event="t"))
        session.add(UserBlock(user_id=lab.user_id, email="p1@example.org", reason="blocklist"))
    await lab.tick()
    assert sorted(m["email"] for m in lab.mail()) == ["p2@example.org", "p3@example.org"]
    assert (await lab.enrollment("p0@example.org")).status == "stopped"
    assert await lab.states() == {"sent": 2, "scheduled": 4, "suppressed": 6}


async def test_suppressed_after_the_claim_but_before_the_call_is_not_mailed(lab: Lab) -> None:
    """A suppression committed between marking `sending` and the SendGrid call (the race
    READ COMMITTED allows) is seen by the re-check: the step ends suppressed, unsent."""
    from roleferry.outreach.dispatch import TickResult

    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(2))
    result = TickResult()
    claimed = await lab.dispatcher.claim(lab.clock(), result)
    assert len(claimed) == 2
    async with lab.db.write_session() as session:
        session.add(Suppression(email="p0@example.org", reason="spam_report", source_event="t"))
    kept = await lab.dispatcher.recheck(claimed, result)
    for item in kept:
        await lab.dispatcher.send([item], result)
    assert [m["email"] for m in lab.mail()] == ["p1@example.org"]
    assert await lab.states() == {"sent": 1, "suppressed": 1}


async def test_a_reply_while_a_step_is_in_flight_lets_at_most_that_one_go(lab: Lab) -> None:
    """Step 0 claimed and in flight when the reply lands: it goes (it was already on its
    way), the enrolment stops, and step 1 never goes."""
    from roleferry.outreach.dispatch import TickResult

    sequence = await lab.sequence(await lab.sender(), steps=2)
    await lab.enroll(sequence, people(1))
    result = TickResult()
    claimed = await lab.dispatcher.recheck(await lab.dispatcher.claim(lab.clock(), result), result)
    enrollment = await lab.enrollment("p0@example.org")
    async with lab.db.write_session() as session:
        await service.reply(session, enrollment, lab.clock(), "test")
    for item in claimed:
        await lab.dispatcher.send([item], result)
    lab.clock.advance(10 * DAY)
    await lab.tick()
    assert len(lab.mail()) == 1
    assert (await lab.enrollment("p0@example.org")).stop_reason == "reply"
    assert await lab.states() == {"sent": 1, "stopped": 1}


async def test_a_reply_before_the_recheck_sends_nothing(lab: Lab) -> None:
    """A reply committed after the claim but before the call: the step ends `stopped`."""
    from roleferry.outreach.dispatch import TickResult

    sequence = await lab.sequence(await lab.sender(), steps=2)
    await lab.enroll(sequence, people(1))
    result = TickResult()
    claimed = await lab.dispatcher.claim(lab.clock(), result)
    async with lab.db.write_session() as session:
        await service.reply(session, await lab.enrollment("p0@example.org"), lab.clock(), "t")
    assert await lab.dispatcher.recheck(claimed, result) == []
    assert lab.mail() == []
    assert await lab.states() == {"stopped": 2}


async def test_processed_event_settles_an_ambiguous_send_without_a_resend(lab: Lab) -> None:
    """The process died after SendGrid's 202, before our commit: the `processed` event with
    the step's send_id marks it sent with the message id; it is not sent again."""
    from roleferry.outreach.dispatch import TickResult

    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(1))
    claimed = await lab.dispatcher.claim(lab.clock(), TickResult())
    message_id = await lab.client.send_once(claimed[0].message, deadline=_deadline())
    # ... and the process dies here: nothing recorded.
    await lab.apply_events(wait_for=1)
    lab.clock.advance(lab.dispatcher.settings.sequence_ambiguity_s + 1)
    await lab.tick()
    async with lab.db.session() as session:
        send = await session.scalar(select(SequenceSend))
    assert send is not None
    assert (send.state, send.message_id) == ("sent", message_id)
    assert len(lab.mail()) == 1


async def test_a_claim_that_never_reached_sendgrid_is_sent_after_the_window(lab: Lab) -> None:
    """The process died after marking `sending`, before the call: no event comes, and once
    the ambiguity window has passed the step is sent, exactly once."""
    from roleferry.outreach.dispatch import TickResult

    sequence = await lab.sequence(await lab.sender(), steps=1)
    await lab.enroll(sequence, people(1))
    await lab.dispatcher.claim(lab.clock(), TickResult())
    lab.clock.advance(lab.dispatcher.settings.sequence_ambiguity_s - 1)
    assert (await lab.tick()).resent == 0
    assert lab.mail() == []
    lab.clock.advance(2)
    result = await lab.tick()
    assert (result.resent, result.sent) == (1, 1)
    assert len(lab.mail()) == 1
    assert await lab.states() == {"sent": 1}


async def test_bounce_stops_the_enrolment_and_a_bouncing_sender_pauses_itself(lab: Lab) -> None:
    """Bounce events (from the world: addresses that do not exist) stop their enrolments;
    past 2% bounces over the last 20 sends the sender pauses and the user is told."""
    from roleferry.sandbox.world import World

    world = World(7)
    company = world.companies[0]
    real = [p.email for c in world.companies for p in c.people if not p.bounces][:20]
    fake = [f"nobody{i}@{company.domain}" for i in range(2)]
    sender = await lab.sender()
    sequence = await lab.sequence(sender, steps=2)
    await lab.enroll(sequence, [{"email": e} for e in real + fake])
    assert (await lab.tick()).sent == 22
    await lab.apply_events(wait_for=22 * 2)
    for email in fake:
        enrollment = await lab.enrollment(email)
        assert (enrollment.status, enrollment.stop_reason) == ("stopped", "bounce")
    async with lab.db.session() as session:
        paused = await session.get(Sender, sender.id)
        notes = [n.kind for n in await session.scalars(select(Notification))]
    assert paused is not None
    assert (paused.paused, paused.paused_reason) == (True, "bounce_rate")
    assert "sender.paused" in notes
    lab.clock.advance(DAY)
    assert (await lab.tick()).sent == 0, "a paused sender sends nothing"


async def test_suppression_sync_copies_sendgrids_lists(lab: Lab) -> None:
    """Addresses on SendGrid's bounce, spam-report and unsubscribe lists become ours."""
    for kind, email in (
        ("bounces", "b@example.org"),
        ("spam_reports", "s@example.org"),
        ("unsubscribes", "u@example.org"),
    ):
        lab.put_on_list(kind, email)
    counts = await lab.dispatcher.sync_suppressions()
    assert counts == {"bounce": 1, "spam_report": 1, "unsubscribe": 1}
    async with lab.db.session() as session:
        rows = {s.email: s.reason for s in await session.scalars(select(Suppression))}
    assert rows == {
        "b@example.org": "bounce",
        "s@example.org": "spam_report",
        "u@example.org": "unsubscribe",
    }


def _deadline():  # type: ignore[no-untyped-def]
    from roleferry.resilience.deadline import Deadline

    return Deadline(10)
