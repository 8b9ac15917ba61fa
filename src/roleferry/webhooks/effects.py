"""What an event changes, applied in the processor's transaction with the event's own status,
so an event's effects and its `applied` mark commit together or not at all.

SendGrid: a message's delivery state only moves forward by rank (processed < deferred <
delivered < bounced|dropped), so events may arrive in any order and a late `delivered` never
overwrites a `bounce`; `open` and `click` are counted; `bounce`, `dropped`, `spamreport` and
`unsubscribe` add the address to the suppression list.

Stripe: payments/fulfilment.py applies them (one `fulfil` per Checkout Session, shared with
the success page, granting once through the ledger's unique references).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach.models import OutreachMessage, Suppression
from roleferry.payments.fulfilment import apply_event
from roleferry.users.models import utcnow
from roleferry.webhooks.models import InboxEvent

RANK = {"queued": 0, "processed": 1, "deferred": 2, "delivered": 3, "bounced": 4, "dropped": 4}
STATE_OF = {
    "processed": "processed",
    "deferred": "deferred",
    "delivered": "delivered",
    "open": "delivered",
    "click": "delivered",
    "bounce": "bounced",
    "dropped": "dropped",
}
SUPPRESSING = {
    "bounce": "bounce",
    "dropped": "dropped",
    "spamreport": "spam_report",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}
SENDGRID_FIELDS = ("email", "outreach_id", "sg_message_id")
"""The payload fields SendGrid effects read: the processor loads these, not whole payloads."""


class Effects:
    """Applies one batch of events inside the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.dialect = session.bind.dialect.name if session.bind else "sqlite"

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def apply_sendgrid(self, events: list[InboxEvent]) -> None:
        payloads = [e.payload for e in events]
        outreach_ids = {p["outreach_id"] for p in payloads if isinstance(p.get("outreach_id"), str)}
        message_ids = {_message_id(p) for p in payloads} - {None}
        found: list[OutreachMessage] = []
        if outreach_ids or message_ids:
            # Locked (PostgreSQL; SQLite has one writer) and in one order: processors of other
            # processes counting events of the same message would otherwise lose updates.
            query = (
                select(OutreachMessage)
                .where(
                    or_(
                        OutreachMessage.id.in_(outreach_ids),
                        OutreachMessage.message_id.in_(message_ids),
                    )
                )
                .order_by(OutreachMessage.id)
                .with_for_update()
            )
            found = list(await self.session.scalars(query))
        by_id = {m.id: m for m in found}
        by_message = {(m.message_id, m.email.lower()): m for m in by_id.values()}
        suppress: dict[str, tuple[str, str]] = {}
        for event in events:
            p = event.payload
            email = str(p.get("email", "")).strip().lower()
            message = by_id.get(str(p.get("outreach_id"))) or by_message.get(
                (_message_id(p), email)
            )
            notes = []
            if event.type in SUPPRESSING and email:
                suppress.setdefault(email, (SUPPRESSING[event.type], event.event_id))
                notes.append("suppressed")
            if message is None:
                notes.append("unmatched")
            else:
                _advance(message, event.type, event.occurred_at)
                notes.append(f"state={message.state}")
            event.outcome = ",".join(notes)
        if suppress:
            now = utcnow()
            await self.session.execute(
                self._insert(Suppression).on_conflict_do_nothing(index_elements=["email"]),
                [
                    {"email": e, "reason": r, "source_event": s, "created_at": now}
                    for e, (r, s) in sorted(suppress.items())
                ],
            )

    async def apply_stripe(self, event: InboxEvent) -> None:
        """Payments' own rules (payments/fulfilment.py), in this transaction."""
        obj = (event.payload.get("data") or {}).get("object") or {}
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise ValueError("the event has no data.object with an id")
        event.outcome = await apply_event(self.session, event.type, obj)


def _message_id(payload: dict[str, Any]) -> str | None:
    value = payload.get("sg_message_id")
    return value.split(".", 1)[0] if isinstance(value, str) and value else None


def _advance(message: OutreachMessage, event_type: str, at: float) -> None:
    target = STATE_OF.get(event_type)
    if target and RANK[target] > RANK.get(message.state, 0):
        message.state = target
    if event_type == "open":
        message.opens += 1
    elif event_type == "click":
        message.clicks += 1
    elif event_type == "spamreport":
        message.spam_reported = True
    elif event_type in ("unsubscribe", "group_unsubscribe"):
        message.unsubscribed = True
    message.last_event_at = max(message.last_event_at or 0.0, at)
