"""Sequences' state changes, shared by the routes, the dispatcher and the webhook effects.

A send (one step of one enrolment) moves through

    scheduled ─► sending ─► sent
        │           ├─► scheduled   (refused before it left, or ambiguous past the window)
        │           └─► suppressed | stopped | failed
        └─► suppressed | stopped | cancelled | failed

and every scheduled send ends in exactly one of sent, suppressed, stopped, cancelled or failed
(`TERMINAL`). Only `claim` (dispatch.py) moves a send to `sending`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.notifications.models import Notification
from roleferry.outreach import billing
from roleferry.outreach.models import (
    Enrollment,
    SequenceDef,
    SequenceRun,
    SequenceSend,
    TimelineEntry,
)

SEND_STATES = ("scheduled", "sending", "sent", "suppressed", "stopped", "cancelled", "failed")
TERMINAL = ("sent", "suppressed", "stopped", "cancelled", "failed")
TRANSITIONS: dict[str, frozenset[str]] = {
    "scheduled": frozenset({"sending", "suppressed", "stopped", "cancelled", "failed"}),
    "sending": frozenset({"sent", "scheduled", "suppressed", "stopped", "failed"}),
    **{state: frozenset() for state in TERMINAL},
}
ACTIVE = ("active", "paused")
ENDED = ("finished", "stopped", "cancelled", "failed")
STOP_CONDITIONS = ("reply", "bounce", "unsubscribe", "spam_report")
VARIABLES = ("first_name", "last_name", "company", "title", "email", "domain")
_VARIABLE = re.compile(r"\{\{\s*([a-zA-Z_]+)\s*\}\}")
# What a send left in `sending` becomes when its enrolment ends for this reason.
_ENDS_AS = {"suppressed": "suppressed", "cancelled": "cancelled", "failed": "failed"}


def can_move(source: str, target: str) -> bool:
    return target in TRANSITIONS[source]


def unknown_variables(template: str) -> list[str]:
    return sorted({v for v in _VARIABLE.findall(template) if v not in VARIABLES})


def variables(template: str) -> list[str]:
    """The known variables a template uses, each once."""
    return sorted({v for v in _VARIABLE.findall(template) if v in VARIABLES})


def render(template: str, contact: dict[str, Any]) -> str:
    return _VARIABLE.sub(lambda m: str(contact.get(m.group(1)) or ""), template)


def note(
    session: AsyncSession,
    enrollment_id: str,
    kind: str,
    at: float,
    step: int | None = None,
    detail: str | None = None,
) -> None:
    session.add(
        TimelineEntry(
            enrollment_id=enrollment_id,
            step=step,
            kind=kind,
            at=at,
            detail=detail[:500] if detail else None,
        )
    )


async def end_enrollments(
    session: AsyncSession, enrollment_ids: Iterable[str], reason: str, now: float
) -> int:
    """Ends active or paused enrolments: their scheduled sends become stopped (or suppressed,
    cancelled, failed by reason); returns how many ended. Runs the finished-run count down."""
    ids = sorted(set(enrollment_ids))
    if not ids:
        return 0
    status = {"finished": "finished", "cancelled": "cancelled", "failed": "failed"}.get(
        reason, "stopped"
    )
    ended = list(
        await session.scalars(
            update(Enrollment)
            .where(Enrollment.id.in_(ids), Enrollment.status.in_(ACTIVE))
            .values(
                status=status,
                stop_reason=None if status == "finished" else reason,
                finished_at=now,
            )
            .returning(Enrollment.id)
        )
    )
    if not ended:
        return 0
    await session.execute(
        update(SequenceSend)
        .where(SequenceSend.enrollment_id.in_(ended), SequenceSend.state == "scheduled")
        .values(state=_ENDS_AS.get(reason, "stopped"), due_at=None, outcome=reason)
    )
    for enrollment_id in ended:
        note(session, enrollment_id, status, now, detail=None if status == "finished" else reason)
    await _count_down_runs(session, ended, now)
    return len(ended)


async def _count_down_runs(session: AsyncSession, ended: list[str], now: float) -> None:
    per_run = await session.execute(
        select(Enrollment.run_id, func.count())
        .where(Enrollment.id.in_(ended))
        .group_by(Enrollment.run_id)
    )
    for run_id, count in sorted(per_run.all()):
        row = (
            await session.execute(
                update(SequenceRun)
                .where(SequenceRun.id == run_id)
                .values(remaining=SequenceRun.remaining - count)
                .returning(SequenceRun.remaining, SequenceRun.user_id, SequenceRun.sequence_id)
            )
        ).one()
        if row.remaining == 0:
            await session.execute(
                update(SequenceRun).where(SequenceRun.id == run_id).values(finished_at=now)
            )
            summary = await run_summary(session, run_id)
            session.add(
                Notification(
                    user_id=row.user_id,
                    kind="sequence_run.finished",
                    title="Your sequence run finished",
                    data={"id": run_id, "sequence_id": row.sequence_id, **summary},
                )
            )


async def run_summary(session: AsyncSession, run_id: str) -> dict[str, Any]:
    """Enrolments by status and sends by state, for one run."""
    enrollments = dict(
        (
            await session.execute(
                select(Enrollment.status, func.count())
                .where(Enrollment.run_id == run_id)
                .group_by(Enrollment.status)
            )
        ).all()
    )
    sends = dict(
        (
            await session.execute(
                select(SequenceSend.state, func.count())
                .join(Enrollment, Enrollment.id == SequenceSend.enrollment_id)
                .where(Enrollment.run_id == run_id)
                .group_by(SequenceSend.state)
            )
        ).all()
    )
    return {"enrollments": enrollments, "sends": sends}


async def mark_sent(
    session: AsyncSession, send: SequenceSend, message_id: str | None, at: float
) -> bool:
    """`sending` → `sent`; schedules the next step or finishes the enrolment. False if the
    send had already left `sending` (the webhook's `processed` and our own record race)."""
    if send.state != "sending":
        if send.state == "sent" and message_id and not send.message_id:
            send.message_id = message_id
        return False
    send.state = "sent"
    send.sent_at = at
    await billing.spend(session, send)
    send.message_id = message_id or send.message_id
    note(session, send.enrollment_id, "sent", at, send.step, send.message_id)
    enrollment = await session.get(Enrollment, send.enrollment_id)
    if enrollment is None or enrollment.status not in ACTIVE:
        return True
    sequence = await session.get(SequenceDef, enrollment.sequence_id)
    steps = sequence.steps if sequence else []
    following = send.step + 1
    if following >= len(steps):
        await end_enrollments(session, [enrollment.id], "finished", at)
        return True
    due = at + float(steps[following]["delay_s"])
    await session.execute(
        update(SequenceSend)
        .where(
            SequenceSend.enrollment_id == enrollment.id,
            SequenceSend.step == following,
            SequenceSend.state == "scheduled",
        )
        .values(due_at=None if enrollment.status == "paused" else due)
    )
    note(session, enrollment.id, "scheduled", at, following, f"due {due:.0f}")
    return True


async def reply(session: AsyncSession, enrollment: Enrollment, now: float, detail: str) -> None:
    """A reply: noted, and the enrolment stops if its sequence stops on replies."""
    note(session, enrollment.id, "replied", now, detail=detail)
    sequence = await session.get(SequenceDef, enrollment.sequence_id)
    if sequence is not None and "reply" in sequence.stop_on:
        await end_enrollments(session, [enrollment.id], "reply", now)


async def pause(session: AsyncSession, enrollment: Enrollment, now: float) -> None:
    """Its scheduled steps lose their due time until resumed (the dispatcher never sees them)."""
    enrollment.status = "paused"
    await session.execute(
        update(SequenceSend)
        .where(SequenceSend.enrollment_id == enrollment.id, SequenceSend.state == "scheduled")
        .values(due_at=None)
    )
    note(session, enrollment.id, "paused", now)


async def resume(session: AsyncSession, enrollment: Enrollment, now: float) -> None:
    """The next unsent step is due now, unless one is still in flight (its `sent` schedules
    the next)."""
    enrollment.status = "active"
    sends = list(
        await session.scalars(
            select(SequenceSend)
            .where(SequenceSend.enrollment_id == enrollment.id)
            .order_by(SequenceSend.step)
        )
    )
    if not any(s.state == "sending" for s in sends):
        following = next((s for s in sends if s.state == "scheduled"), None)
        if following is not None:
            following.due_at = now
    note(session, enrollment.id, "resumed", now)


async def enroll(
    session: AsyncSession,
    sequence: SequenceDef,
    contacts: list[dict[str, Any]],
    rejected: list[dict[str, Any]],
    now: float,
) -> SequenceRun:
    """One run: an enrolment per new address (one already active in the sequence is
    rejected) with a send per step, the first due after its delay, the others once their
    predecessor is sent."""
    active = set(
        await session.scalars(
            select(Enrollment.email).where(
                Enrollment.sequence_id == sequence.id, Enrollment.status.in_(ACTIVE)
            )
        )
    )
    run = SequenceRun(
        user_id=sequence.user_id, sequence_id=sequence.id, total=0, remaining=0, rejected=[]
    )
    session.add(run)
    await session.flush()
    rejected = list(rejected)
    seen: set[str] = set()
    enrollments: list[Enrollment] = []
    drafted = {n for n, step in enumerate(sequence.steps) if "ai_draft" in step}
    for contact in contacts:
        email = str(contact["email"]).strip().lower()
        if email in active or email in seen:
            rejected.append({"email": email, "reason": "already enrolled in this sequence"})
            continue
        if drafted and not (contact.get("first_name") or contact.get("last_name")):
            rejected.append(
                {"email": email, "reason": "an AI-drafted step needs first_name or last_name"}
            )
            continue
        seen.add(email)
        details = {k: v for k, v in contact.items() if k not in ("email", "timezone")}
        enrollments.append(
            Enrollment(
                user_id=sequence.user_id,
                sequence_id=sequence.id,
                run_id=run.id,
                email=email,
                contact=details,
                timezone=contact.get("timezone"),
            )
        )
    session.add_all(enrollments)
    await session.flush()
    first_due = now + float(sequence.steps[0]["delay_s"])
    for enrollment in enrollments:
        domain = enrollment.email.rsplit("@", 1)[1]
        session.add_all(
            SequenceSend(
                enrollment_id=enrollment.id,
                user_id=sequence.user_id,
                sender_id=sequence.sender_id,
                step=number,
                email=enrollment.email,
                domain=domain,
                due_at=first_due if number == 0 else None,
                draft_state="pending" if number in drafted else None,
            )
            for number in range(len(sequence.steps))
        )
        note(session, enrollment.id, "scheduled", now, 0, f"due {first_due:.0f}")
    run.total = run.remaining = len(enrollments)
    run.rejected = rejected
    if not enrollments:
        run.finished_at = now
    return run
