"""What an event changes, applied in the processor's transaction with the event's own status,
so an event's effects and its `applied` mark commit together or not at all.

SendGrid: a message's delivery state only moves forward by rank (processed < deferred <
delivered < bounced|dropped), so events may arrive in any order and a late `delivered` never
overwrites a `bounce`; `open` and `click` are counted; `bounce`, `dropped`, `spamreport` and
`unsubscribe` add the address to the suppression list; events of sequence sends (custom arg
`send_id`) go to their enrolments (`outreach.events`).

Stripe: payment state per Checkout Session / PaymentIntent; credits go through a ledger whose
unique reference (`purchase:<payment>`) makes a payment credit its user exactly once, however
many of its events arrive; refunds debit the newly refunded share once per refunded total.

A value that cannot be stored or used (an address longer than an address can be, an id longer
than its column, an amount that is not a whole number of cents) rejects its event: `failed` at
once with the reason, since trying again cannot help, and never a database error that would
take other events down with it.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach import events as sequence_events
from roleferry.outreach.models import OutreachMessage, Suppression
from roleferry.payments.models import CreditEntry, Payment
from roleferry.users.models import User, utcnow
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
CENTS_PER_CREDIT = 10
EMAIL_MAX = 320
"""RFC 5321's longest address, and the length of the address columns."""
STRIPE_ID_MAX = 200
"""Stripe's ids are far shorter; 200 keeps `purchase:<id>` and `refund:<id>:<cents>` within the
ledger's 255-character references, and ids within the payments' 255."""
USER_ID_MAX = 32
CURRENCY_MAX = 8
INT_MAX = 2**31 - 1
"""Amounts and credits are 32-bit integer columns on PostgreSQL."""
HANDLED_STRIPE = frozenset(
    (
        "checkout.session.completed",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
    )
)


class Rejected(ValueError):
    """The event can never be applied as it is. Raised before the event changes anything, so
    the rest of its batch goes on without a savepoint to undo it."""


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
                self._insert(Suppression).on_conflict_do_nothing(index_elements=["email"]),
                [
                    {"email": e, "reason": r, "source_event": s, "created_at": now}
                    for e, (r, s) in sorted(suppress.items())
                ],
            )
        await sequence_events.apply(self.session, events)

    async def apply_stripe(self, event: InboxEvent) -> None:
        kind = event.type
        if kind not in HANDLED_STRIPE:
            event.outcome = "ignored"
            return
        try:
            obj, object_id = _object(event.payload)
            intent_id = _text(obj, "payment_intent", STRIPE_ID_MAX, expandable=True)
            metadata = _metadata(obj)
            reference_user = _text(obj, "client_reference_id", USER_ID_MAX)
            metadata_user = _text(metadata, "metadata.user_id", USER_ID_MAX, key="user_id")
            declared = _declared_credits(metadata)
            amounts = {f: _amount(obj, f) for f in ("amount_total", "amount_received", "amount")}
            refunded = _amount(obj, "amount_refunded") or 0
            currency = _text(obj, "currency", CURRENCY_MAX)
        except Rejected as exc:
            _reject(event, str(exc))
            return
        if kind == "checkout.session.completed":
            payment = await self._payment(session_id=object_id, intent_id=intent_id)
            payment.user_id = payment.user_id or reference_user
            payment.amount = amounts["amount_total"] or payment.amount
            payment.currency = currency or payment.currency
            payment.credits = _credits(declared, payment.amount)
            if obj.get("payment_status") == "paid":
                payment.status = _forward(payment.status, "paid")
                event.outcome = await self._credit(payment)
            else:
                event.outcome = f"session {str(obj.get('payment_status'))[:32]}"
        elif kind == "payment_intent.succeeded":
            payment = await self._payment(intent_id=object_id)
            payment.amount = amounts["amount_received"] or amounts["amount"] or payment.amount
            payment.user_id = payment.user_id or metadata_user
            payment.status = _forward(payment.status, "paid")
            if not payment.credits:
                payment.credits = _credits(declared, payment.amount)
            event.outcome = await self._credit(payment)
        elif kind == "payment_intent.payment_failed":
            payment = await self._payment(intent_id=object_id)
            payment.status = _forward(payment.status, "failed")
            event.outcome = f"payment {payment.status}"
        else:
            payment = await self._payment(intent_id=intent_id)
            event.outcome = await self._refund(payment, object_id, refunded, amounts["amount"])
        payment.updated_at = utcnow()

    async def _payment(
        self, *, session_id: str | None = None, intent_id: str | None = None
    ) -> Payment:
        clauses = []
        if session_id:
            clauses.append(Payment.checkout_session_id == session_id)
        if intent_id:
            clauses.append(Payment.payment_intent_id == intent_id)
        payment = (
            await self.session.scalar(select(Payment).where(or_(*clauses)).with_for_update())
            if clauses
            else None
        )
        if payment is None:
            payment = Payment(
                checkout_session_id=session_id,
                payment_intent_id=intent_id,
                status="open",
                amount=0,
                amount_refunded=0,
                credits=0,
                currency="usd",
            )
            self.session.add(payment)
        else:
            payment.checkout_session_id = payment.checkout_session_id or session_id
            payment.payment_intent_id = payment.payment_intent_id or intent_id
        await self.session.flush()
        return payment

    async def _credit(self, payment: Payment) -> str:
        if not payment.user_id or payment.credits <= 0:
            return f"paid; no {'user' if not payment.user_id else 'credits'} to credit"
        if await self.session.get(User, payment.user_id) is None:
            return f"paid; unknown user {payment.user_id}"
        reference = f"purchase:{payment.payment_intent_id or payment.checkout_session_id}"
        added = await self._ledger(payment.user_id, payment.credits, "purchase", reference)
        return f"credited {payment.credits}" if added else "already credited"

    async def _refund(
        self, payment: Payment, charge_id: str, refunded: int, amount: int | None
    ) -> str:
        if refunded <= payment.amount_refunded:
            return "refund already recorded"
        newly = refunded - payment.amount_refunded
        payment.amount_refunded = refunded
        payment.amount = payment.amount or amount or 0
        payment.status = "refunded" if refunded >= payment.amount else "partially_refunded"
        if not payment.user_id or not payment.amount or not payment.credits:
            return f"refund of {newly} recorded"
        debit = -(payment.credits * newly // payment.amount)
        reference = f"refund:{charge_id}:{refunded}"
        await self._ledger(payment.user_id, debit, "refund", reference)
        return f"refund of {newly} debited {-debit} credits"

    async def _ledger(self, user_id: str, delta: int, reason: str, reference: str) -> bool:
        statement = (
            self._insert(CreditEntry)
            .values(
                user_id=user_id,
                delta=delta,
                reason=reason,
                reference=reference,
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["reference"])
            .returning(CreditEntry.id)
        )
        return (await self.session.execute(statement)).scalar() is not None


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


_PAYMENT_RANK = {"open": 0, "failed": 1, "paid": 2, "partially_refunded": 3, "refunded": 4}


def _forward(current: str, target: str) -> str:
    """Payment states only move forward: a late `payment_failed` never undoes `paid`."""
    return target if _PAYMENT_RANK[target] > _PAYMENT_RANK.get(current, 0) else current


def _credits(declared: int | None, amount: int) -> int:
    return declared if declared is not None else amount // CENTS_PER_CREDIT


def _reject(event: InboxEvent, reason: str) -> None:
    event.status = FAILED
    event.outcome = f"rejected: {reason}"


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
