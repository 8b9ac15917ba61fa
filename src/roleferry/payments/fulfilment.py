"""What Stripe's payment events change, applied inside the caller's transaction: the webhook
processor's (with the event's `applied` mark) or the success page's.

`fulfil` is the one function that turns a paid Checkout Session into credits. Its ledger
reference is `purchase:<session id>`, unique, so however many times and in whatever order the
webhook (`checkout.session.completed` when paid, `checkout.session.async_payment_succeeded`),
the success page and reconciliation call it, concurrently or not, the session grants once.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.payments import jobs
from roleferry.payments.ledger import Ledger
from roleferry.payments.models import CreditEntry, Payment
from roleferry.users.models import User, utcnow

CENTS_PER_CREDIT = 10
"""Credits of a payment that declares none (not one of our checkouts): 1 per 10 cents."""
CHECKOUT_SOURCE = "roleferry_checkout"
"""`metadata.source` of the PaymentIntents our checkouts create: their sessions grant."""
PAID = ("paid", "no_payment_required")
_RANK = {
    "open": 0,
    "expired": 1,
    "failed": 1,
    "paid": 2,
    "partially_refunded": 3,
    "refunded": 4,
}


def forward(current: str, target: str) -> str:
    """Payment states only move forward: a late `payment_failed` never undoes `paid`."""
    return target if _RANK[target] > _RANK.get(current, 0) else current


def _text(value: Any, limit: int = 255) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _count(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and 0 <= value < 2**31:
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and int(value) < 2**31:
        return int(value)
    return None


def _id_of(value: Any) -> str | None:
    """An expandable field (`payment_intent`) may hold the id or the object."""
    if isinstance(value, dict):
        value = value.get("id")
    return _text(value)


def _metadata(obj: dict[str, Any]) -> dict[str, Any]:
    value = obj.get("metadata")
    return value if isinstance(value, dict) else {}


class Payments:
    """Payment rows and their credits, in one transaction."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.ledger = Ledger(session)
        self.dialect = self.ledger.dialect

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def payment(
        self, *, session_id: str | None = None, intent_id: str | None = None
    ) -> Payment:
        """The payment of a session and/or intent, locked, created if new. A row known only
        by its session and another known only by its intent are merged into the session's
        when an event links them (otherwise the link would break the unique intent id)."""
        if not session_id and not intent_id:
            raise ValueError("a payment needs a session or a payment intent id")
        clauses = []
        if session_id:
            clauses.append(Payment.checkout_session_id == session_id)
        if intent_id:
            clauses.append(Payment.payment_intent_id == intent_id)
        rows = await self._locked(clauses)
        if not rows:
            now = utcnow()
            # Concurrent creators (success page and webhook): the unique ids decide, the
            # loser reads the winner's row.
            await self.session.execute(
                self._insert(Payment)
                .values(
                    checkout_session_id=session_id,
                    payment_intent_id=intent_id,
                    status="open",
                    amount=0,
                    amount_refunded=0,
                    currency="usd",
                    credits=0,
                    created_at=now,
                    updated_at=now,
                )
                .on_conflict_do_nothing()
            )
            rows = await self._locked(clauses)
        keep = next((r for r in rows if r.checkout_session_id), rows[0])
        for other in rows:
            if other is not keep:
                await self._merge(keep, other)
        keep.checkout_session_id = keep.checkout_session_id or session_id
        keep.payment_intent_id = keep.payment_intent_id or intent_id
        await self.session.flush()
        return keep

    async def _locked(self, clauses: list[Any]) -> list[Payment]:
        query = select(Payment).where(or_(*clauses)).order_by(Payment.id).with_for_update()
        return list(await self.session.scalars(query.execution_options(populate_existing=True)))

    async def _merge(self, keep: Payment, other: Payment) -> None:
        """Folds `other` into `keep`; `other` is deleted first, its unique ids with it."""
        with self.session.no_autoflush:
            await self.session.execute(delete(Payment).where(Payment.id == other.id))
            self.session.expunge(other)
            keep.payment_intent_id = keep.payment_intent_id or other.payment_intent_id
            keep.user_id = keep.user_id or other.user_id
            keep.amount = keep.amount or other.amount
            keep.amount_refunded = max(keep.amount_refunded, other.amount_refunded)
            keep.credits = keep.credits or other.credits
            keep.failure = keep.failure or other.failure
            keep.status = forward(keep.status, other.status)
        await self.session.flush()

    async def fulfil(self, checkout: dict[str, Any]) -> str:
        """Grants a paid Checkout Session's credits once; records an unpaid one."""
        session_id = _text(checkout.get("id"))
        if session_id is None:
            raise ValueError("a Checkout Session needs an id")
        metadata = _metadata(checkout)
        payment = await self.payment(
            session_id=session_id, intent_id=_id_of(checkout.get("payment_intent"))
        )
        payment.user_id = payment.user_id or _text(checkout.get("client_reference_id"), 32)
        payment.amount = _count(checkout.get("amount_total")) or payment.amount
        payment.currency = _text(checkout.get("currency"), 8) or payment.currency
        payment.pack = payment.pack or _text(metadata.get("pack"), 32)
        declared = _count(metadata.get("credits"))
        if declared is not None:
            # The session's own declaration wins over a guess made from its intent's amount.
            payment.credits = declared
        elif not payment.credits:
            payment.credits = payment.amount // CENTS_PER_CREDIT
        payment.updated_at = utcnow()
        if checkout.get("status") == "expired" and payment.status == "open":
            payment.status = "expired"
            return "session expired"
        if checkout.get("payment_status") not in PAID:
            return f"session {str(checkout.get('payment_status'))[:32]}: awaiting payment"
        payment.status = forward(payment.status, "paid")
        return await self._credit(payment, f"purchase:{session_id}")

    async def _credit(self, payment: Payment, reference: str) -> str:
        if not payment.user_id or payment.credits <= 0:
            return f"paid; no {'user' if not payment.user_id else 'credits'} to credit"
        if await self.session.get(User, payment.user_id) is None:
            return f"paid; unknown user {payment.user_id}"
        if payment.payment_intent_id and reference.startswith("purchase:cs"):
            # A PaymentIntent credited on its own before it was linked to this session.
            earlier = f"purchase:{payment.payment_intent_id}"
            if await self.session.scalar(
                select(CreditEntry.id).where(CreditEntry.reference == earlier)
            ):
                return "already credited"
        entry = await self.ledger.purchase(payment.user_id, payment.credits, reference)
        if entry is None:
            return "already credited"
        jobs.credited(self.session, payment.user_id)
        if payment.amount_refunded and payment.amount:
            # A refund that arrived before the payment's grant: its share is taken back now.
            share = payment.credits * min(payment.amount_refunded, payment.amount) // payment.amount
            early = f"refund:early:{reference}:{payment.amount_refunded}"
            taken = await self.ledger.refund(payment.user_id, share, early)
            return f"credited {payment.credits}; an earlier refund took back {taken}"
        return f"credited {payment.credits}"

    async def _granted(self, payment: Payment) -> bool:
        references = [
            f"purchase:{i}" for i in (payment.checkout_session_id, payment.payment_intent_id) if i
        ]
        found = await self.session.scalar(
            select(CreditEntry.id).where(CreditEntry.reference.in_(references)).limit(1)
        )
        return found is not None

    async def intent_succeeded(self, intent: dict[str, Any]) -> str:
        """A PaymentIntent paid: our checkouts' are granted by their session; a PaymentIntent
        of its own (metadata.user_id and credits) grants here."""
        metadata = _metadata(intent)
        payment = await self.payment(intent_id=_text(intent.get("id")))
        payment.amount = (
            _count(intent.get("amount_received")) or _count(intent.get("amount")) or payment.amount
        )
        payment.user_id = payment.user_id or _text(metadata.get("user_id"), 32)
        payment.status = forward(payment.status, "paid")
        payment.updated_at = utcnow()
        if metadata.get("source") == CHECKOUT_SOURCE or payment.checkout_session_id:
            return "paid; credited through its checkout session"
        if not payment.credits:
            declared = _count(metadata.get("credits"))
            payment.credits = (
                declared if declared is not None else payment.amount // CENTS_PER_CREDIT
            )
        return await self._credit(payment, f"purchase:{payment.payment_intent_id}")

    async def failed(
        self, *, session_id: str | None = None, intent_id: str | None = None, reason: str
    ) -> str:
        """A declined card or an async payment that failed: recorded, nothing granted."""
        payment = await self.payment(session_id=session_id, intent_id=intent_id)
        payment.status = forward(payment.status, "failed")
        payment.failure = reason[:255]
        payment.updated_at = utcnow()
        return f"payment {payment.status}: {reason[:80]}"

    async def refunded(self, charge: dict[str, Any]) -> str:
        """Takes back the newly refunded share of the credits, once per refunded total."""
        intent_id = _id_of(charge.get("payment_intent"))
        if intent_id is None:
            return "refund of a charge without a payment intent: ignored"
        payment = await self.payment(intent_id=intent_id)
        refunded = _count(charge.get("amount_refunded")) or 0
        if refunded <= payment.amount_refunded:
            return "refund already recorded"
        newly = refunded - payment.amount_refunded
        payment.amount_refunded = refunded
        payment.amount = payment.amount or _count(charge.get("amount")) or 0
        payment.status = forward(
            payment.status, "refunded" if refunded >= payment.amount else "partially_refunded"
        )
        payment.updated_at = utcnow()
        if not payment.user_id or not payment.amount or not payment.credits:
            return f"refund of {newly} recorded"
        if not await self._granted(payment):
            return f"refund of {newly} recorded; its share is taken back when it is granted"
        share = payment.credits * newly // payment.amount
        reference = f"refund:{_text(charge.get('id'), 120)}:{refunded}"
        taken = await self.ledger.refund(payment.user_id, share, reference)
        spent = f"; {share - taken} already spent" if taken < share else ""
        return f"refund of {newly} took back {taken} credits{spent}"


async def apply_event(session: AsyncSession, kind: str, obj: dict[str, Any]) -> str:
    """One Stripe event's effect; the outcome says what it did."""
    payments = Payments(session)
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        return await payments.fulfil(obj)
    if kind == "checkout.session.expired":
        return await payments.fulfil(obj)
    if kind == "checkout.session.async_payment_failed":
        return await payments.failed(
            session_id=_text(obj.get("id")),
            intent_id=_id_of(obj.get("payment_intent")),
            reason="the delayed payment failed",
        )
    if kind == "payment_intent.succeeded":
        return await payments.intent_succeeded(obj)
    if kind == "payment_intent.payment_failed":
        error = obj.get("last_payment_error")
        message = error.get("message") if isinstance(error, dict) else None
        return await payments.failed(
            intent_id=_text(obj.get("id")), reason=_text(message) or "the payment failed"
        )
    if kind == "charge.refunded":
        return await payments.refunded(obj)
    return "ignored"


HANDLED = frozenset(
    (
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
    )
)
