"""What an event changes, applied in the processor's transaction with the event's own status,
so an event's effects and its `applied` mark commit together or not at all.

SendGrid: a message's delivery state only moves forward by rank (processed < deferred <
delivered < bounced|dropped), so events may arrive in any order and a late `delivered` never
overwrites a `bounce`; `open` and `click` are counted; `bounce`, `dropped`, `spamreport` and
`unsubscribe` add the address to the suppression list; events of sequence sends (custom arg
`send_id`) go to their enrolments (`outreach.events`).

Stripe: payments/fulfilment.py applies them (one `fulfil` per Checkout Session, shared with
the success page, granting once through the ledger's unique references).

A value that cannot be stored or used (an address longer than an address can be, an id longer
than its column, an amount that is not a whole number of cents) rejects its event: `failed` at
once with the reason, since trying again cannot help, and never a database error that would
take other events down with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import insert_for
from roleferry.outreach import events as sequence_events
from roleferry.outreach.models import OutreachMessage, Suppression
from roleferry.payments.fulfilment import HANDLED, apply_event
from roleferry.users.models import utcnow
from roleferry.webhooks.models import FAILED, InboxEvent

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
SENDGRID_FIELDS = ("email", "outreach_id", "sg_message_id", "send_id")
"""The payload fields SendGrid effects read: the processor loads these, not whole payloads."""
EMAIL_MAX = 320
"""RFC 5321's longest address, and the length of the address columns."""
STRIPE_ID_MAX = 200
"""Stripe's ids are far shorter; 200 keeps `purchase:<id>` and `refund:<id>:<cents>` within the
ledger's 255-character references, and ids within the payments' 255."""
USER_ID_MAX = 32
CURRENCY_MAX = 8
INT_MAX = 2**31 - 1
"""Amounts and credits are 32-bit integer columns on PostgreSQL."""


class Rejected(ValueError):
    """The event can never be applied as it is. Raised before the event changes anything, so
    the rest of its batch goes on without a savepoint to undo it."""


class Effects:
    """Applies one batch of events inside the caller's transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

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
            if len(email) > EMAIL_MAX:
                _reject(event, f"the email is {len(email)} characters; an address has {EMAIL_MAX}")
                continue
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
                insert_for(self.session, Suppression).on_conflict_do_nothing(
                    index_elements=["email"]
                ),
                [
                    {"email": e, "reason": r, "source_event": s, "created_at": now}
                    for e, (r, s) in sorted(suppress.items())
                ],
            )
        await sequence_events.apply(self.session, events)

    async def apply_stripe(self, event: InboxEvent) -> None:
        """Payments' own rules (payments/fulfilment.py), in this transaction, for an event
        whose values fit; one that cannot be stored fails at once with the reason."""
        if event.type not in HANDLED:
            event.outcome = "ignored"
            return
        try:
            obj = _validated(event.payload)
        except Rejected as exc:
            _reject(event, str(exc))
            return
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


def _reject(event: InboxEvent, reason: str) -> None:
    event.status = FAILED
    event.outcome = f"rejected: {reason}"


def _validated(payload: dict[str, Any]) -> dict[str, Any]:
    """The event's object, once every value payments read from it fits its column."""
    obj, _object_id = _object(payload)
    _text(obj, "payment_intent", STRIPE_ID_MAX, expandable=True)
    metadata = _metadata(obj)
    _text(obj, "client_reference_id", USER_ID_MAX)
    _text(metadata, "metadata.user_id", USER_ID_MAX, key="user_id")
    _declared_credits(metadata)
    for name in ("amount_total", "amount_received", "amount", "amount_refunded"):
        _amount(obj, name)
    _text(obj, "currency", CURRENCY_MAX)
    return obj


def _object(payload: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The event's `data.object` and its id."""
    data = payload.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    object_id = obj.get("id") if isinstance(obj, dict) else None
    if not isinstance(obj, dict) or not isinstance(object_id, str) or not object_id:
        raise Rejected("the event has no data.object with an id")
    if len(object_id) > STRIPE_ID_MAX:
        raise Rejected(f"data.object.id is {len(object_id)} characters; at most {STRIPE_ID_MAX}")
    return obj, object_id


def _text(
    obj: dict[str, Any], name: str, limit: int, *, key: str | None = None, expandable: bool = False
) -> str | None:
    """A string field that fits its column; an expandable one (`payment_intent`) may come as
    the object itself, with its id."""
    value = obj.get(key or name)
    if expandable and isinstance(value, dict):
        value = value.get("id")
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise Rejected(f"{name} must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise Rejected(f"{name} is {len(value)} characters; at most {limit}")
    return value


def _amount(obj: dict[str, Any], name: str) -> int | None:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= INT_MAX:
        raise Rejected(f"{name} must be a whole number of cents from 0 to {INT_MAX}")
    return value


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Rejected(f"metadata must be an object, not {type(value).__name__}")
    return value


def _declared_credits(metadata: dict[str, Any]) -> int | None:
    """`metadata.credits` when it is a whole number that fits; otherwise none declared."""
    raw = metadata.get("credits")
    if not (isinstance(raw, str) and raw.isascii() and raw.isdigit()):
        return None
    if int(raw) > INT_MAX:
        raise Rejected(f"metadata.credits is more than {INT_MAX}")
    return int(raw)
