"""What SendGrid's delivery events do to sequence sends (their `send_id` custom arg names the
send), in the webhook processor's transaction: each event goes on its enrolment's timeline; a
`processed` (or later) event settles a send left `sending` with an unknown outcome; bounce,
spam report and unsubscribe stop the enrolment when its sequence stops on them, a `dropped`
(SendGrid refused a suppressed address) always does; a sender whose bounce rate (bounces only,
not drops) passes 2% over at least its last 20 sends pauses itself and notifies."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.notifications.models import Notification
from roleferry.outreach import billing, service
from roleferry.outreach.models import Enrollment, Sender, SequenceDef, SequenceSend
from roleferry.webhooks.models import InboxEvent

TIMELINE_KIND = {
    "processed": "processed",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribed",
    "group_unsubscribe": "unsubscribed",
}
STOPS = {
    "bounce": "bounce",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}
HEALTH_WINDOW = 20
HEALTH_MAX_BOUNCE_RATE = 0.02


async def apply(session: AsyncSession, events: Sequence[InboxEvent]) -> None:
    mine = [e for e in events if isinstance(e.payload.get("send_id"), str)]
    if not mine:
        return
    sends = {
        s.id: s
        for s in await session.scalars(
            select(SequenceSend)
            .where(SequenceSend.id.in_({e.payload["send_id"] for e in mine}))
            .order_by(SequenceSend.id)
            .with_for_update()
        )
    }
    # billing.py's lock order: sends (above), then the senders a bounce may pause (locked
    # now, not at the bounce-rate check after credits were spent), then the credits spent
    # for steps this batch marks sent. The dispatcher's claim takes senders, then credits.
    bouncing = {
        sends[e.payload["send_id"]].sender_id
        for e in mine
        if e.type == "bounce" and e.payload["send_id"] in sends
    }
    if bouncing:
        await session.execute(
            select(Sender.id).where(Sender.id.in_(bouncing)).order_by(Sender.id).with_for_update()
        )
    await billing.lock_balances(
        session, {s.user_id for s in sends.values() if s.state == "sending"}
    )
    bounced_senders: set[str] = set()
    stops: dict[str, list[str]] = {}
    dropped: list[str] = []
    for event in sorted(mine, key=lambda e: e.occurred_at):
        send = sends.get(event.payload["send_id"])
        if send is None:
            continue
        kind = TIMELINE_KIND.get(event.type, event.type)
        service.note(session, send.enrollment_id, kind, event.occurred_at, send.step)
        if event.type in TIMELINE_KIND and send.state == "sending":
            message_id = str(event.payload.get("sg_message_id") or "").split(".", 1)[0]
            await service.mark_sent(session, send, message_id or None, event.occurred_at)
        if event.type == "bounce" and send.outcome != "bounced":
            send.outcome = "bounced"
            bounced_senders.add(send.sender_id)
        elif event.type == "dropped":
            # SendGrid refused the address (on its suppression lists): no more mail to it.
            send.outcome = send.outcome or "dropped"
            dropped.append(send.enrollment_id)
        if event.type in STOPS:
            stops.setdefault(STOPS[event.type], []).append(send.enrollment_id)
    at = max(e.occurred_at for e in mine)
    for reason, ids in sorted(stops.items()):
        await _stop(session, ids, reason, at)
    await service.end_enrollments(session, dropped, "suppressed", at)
    for sender_id in sorted(bounced_senders):
        await _check_health(session, sender_id)


async def _stop(session: AsyncSession, enrollment_ids: list[str], reason: str, at: float) -> None:
    rows = (
        await session.execute(
            select(Enrollment.id, SequenceDef.stop_on)
            .join(SequenceDef, SequenceDef.id == Enrollment.sequence_id)
            .where(Enrollment.id.in_(set(enrollment_ids)))
        )
    ).all()
    await service.end_enrollments(
        session, [id_ for id_, stop_on in rows if reason in stop_on], reason, at
    )


async def _check_health(session: AsyncSession, sender_id: str) -> None:
    recent = list(
        await session.scalars(
            select(SequenceSend.sent_at)
            .where(SequenceSend.sender_id == sender_id, SequenceSend.state == "sent")
            .order_by(SequenceSend.sent_at.desc())
            .limit(HEALTH_WINDOW)
        )
    )
    if len(recent) < HEALTH_WINDOW:
        return
    # The last 20 sends, and any sent at the same moment as the 20th (ties have no order).
    outcomes = list(
        await session.scalars(
            select(SequenceSend.outcome).where(
                SequenceSend.sender_id == sender_id,
                SequenceSend.state == "sent",
                SequenceSend.sent_at >= recent[-1],
            )
        )
    )
    rate = sum(o == "bounced" for o in outcomes) / len(outcomes)
    if rate <= HEALTH_MAX_BOUNCE_RATE:
        return
    sender = await session.get(Sender, sender_id, with_for_update=True)
    if sender is None or sender.paused:
        return
    sender.paused = True
    sender.paused_reason = "bounce_rate"
    session.add(
        Notification(
            user_id=sender.user_id,
            kind="sender.paused",
            title=f"Sender {sender.email} paused: bounce rate {rate:.0%}",
            data={"id": sender.id, "bounce_rate": rate, "over_sends": len(outcomes)},
        )
    )
