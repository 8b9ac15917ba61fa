"""Checkout and reconciliation: the synchronous calls to Stripe, through the provider core's
client (its policy, deadline and Idempotency-Key), and what they record.

Stripe has no fallback: slow or down, a checkout answers 503 with Retry-After within
`ROLEFERRY_CHECKOUT_DEADLINE_S`, never a hang.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.errors import ApiError, Conflict, NotFound, ServiceUnavailable
from roleferry.payments.fulfilment import CHECKOUT_SOURCE, HANDLED, Payments
from roleferry.payments.models import Payment
from roleferry.payments.settings import Pack
from roleferry.providers.errors import IdempotencyConflict, InvalidRequest, PaymentDeclined
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.errors import CallError
from roleferry.runtime import Runtime
from roleferry.users.models import User, utcnow
from roleferry.webhooks.inbox import Incoming, insert_new

log = structlog.get_logger(__name__)

EVENT_PAGES = 20
"""Reconciliation reads at most this many pages of 100 undelivered events per run."""


class PaymentProviderError(ApiError):
    status_code, code = 502, "payment_provider_error"


@dataclass(frozen=True)
class Checkout:
    session_id: str
    url: str | None
    pack: str
    credits: int
    amount: int
    currency: str


@dataclass(frozen=True)
class CheckoutState:
    session_id: str
    status: str
    payment_status: str
    credits: int
    outcome: str


@dataclass
class Reconciled:
    sessions_checked: int = 0
    events_found: int = 0
    events_stored: int = 0
    outcomes: list[str] = field(default_factory=list)


def _stripe(runtime: Runtime) -> Any:
    if runtime.providers is None:
        raise RuntimeError("the runtime is not started")
    return runtime.providers.clients["stripe"]


def _as_dict(obj: Any) -> dict[str, Any]:
    """An SDK object as plain JSON data, as a webhook would carry it."""
    if hasattr(obj, "to_dict"):
        data: dict[str, Any] = obj.to_dict()
        return data
    return json.loads(json.dumps(obj))  # type: ignore[no-any-return]


def unavailable(exc: CallError, what: str) -> ApiError:
    """Stripe's refusal or failure as our answer: its own 4xx say what to fix, the rest 503."""
    if isinstance(exc, PaymentDeclined):
        return PaymentProviderError(f"Stripe declined {what}: {exc.message}")
    if isinstance(exc, InvalidRequest):
        return PaymentProviderError(f"Stripe refused {what}: {exc.message}")
    retry = getattr(exc, "retry_in", None) or exc.retry_after or 5.0
    seconds = max(1, round(retry))
    return ServiceUnavailable(
        f"Stripe is not answering ({exc.kind}); no payment was taken, try again in {seconds} s",
        details={"provider": "stripe", "reason": exc.kind},
        headers={"Retry-After": str(seconds)},
    )


def _scoped(user_id: str, key: str) -> str:
    """The client's Idempotency-Key, scoped to its user: two users' keys never collide."""
    return hashlib.sha256(f"{user_id}\0{key}".encode()).hexdigest()


def _request_hash(pack_name: str) -> str:
    """What the request asked for (its body is the pack), to tell a retry from a new request."""
    return hashlib.sha256(json.dumps({"pack": pack_name}).encode()).hexdigest()


def _reused(key: str, pack: str | None) -> Conflict:
    first = f" for a checkout of pack {pack!r}" if pack else ""
    return Conflict(
        f"Idempotency-Key {key!r} was already used{first} with another body; repeat that "
        "request as it was, or send a new key for a new checkout",
        details={"idempotency_key": key, **({"pack": pack} if pack else {})},
    )


def _replayed(payment: Payment, key: str, request_hash: str) -> Checkout:
    if payment.request_hash != request_hash:
        raise _reused(key, payment.pack)
    assert payment.checkout_session_id is not None
    return Checkout(
        payment.checkout_session_id,
        payment.checkout_url,
        payment.pack or "",
        payment.credits,
        payment.amount,
        payment.currency,
    )


async def _keyed(db: AsyncSession, user: User, scoped: str) -> Payment | None:
    found: Payment | None = await db.scalar(
        select(Payment).where(Payment.idempotency_key == scoped, Payment.user_id == user.id)
    )
    return found


_STORED = (
    "checkout_session_id",
    "user_id",
    "amount",
    "currency",
    "credits",
    "pack",
    "idempotency_key",
    "request_hash",
    "checkout_url",
)
_STORE_SQLITE = (
    "INSERT INTO payments (status, amount_refunded, created_at, updated_at, "  # noqa: S608
    + ", ".join(_STORED)
    + ") VALUES ('open', 0, ?, ?, "
    + ", ".join("?" * len(_STORED))
    + ") ON CONFLICT DO NOTHING RETURNING id"
)
_STORE_POSTGRES = postgresql.insert(Payment).on_conflict_do_nothing().returning(Payment.id)


async def _store(database: Database, row: dict[str, Any]) -> bool:
    """Records a new checkout (`row`: the `_STORED` columns); False when its session or key
    is there already. It is the checkout's one write: on SQLite one hop to the writer's
    thread for the whole transaction, on PostgreSQL one statement compiled once."""
    if database.urls.is_sqlite:
        return await database.run_sqlite_write(partial(_store_sqlite, row))
    now = utcnow()
    values = {**row, "status": "open", "amount_refunded": 0, "created_at": now, "updated_at": now}
    async with database.write_session() as db:
        return await db.scalar(_STORE_POSTGRES, values) is not None


def _store_sqlite(row: dict[str, Any], connection: sqlite3.Connection) -> bool:
    # SQLAlchemy's text form of a DateTime on SQLite, as the ORM reads it back.
    now = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
    values = [now, now, *(row[name] for name in _STORED)]
    return connection.execute(_STORE_SQLITE, values).fetchone() is not None


async def start_checkout(
    runtime: Runtime, db: AsyncSession, user: User, pack_name: str, idempotency_key: str | None
) -> Checkout:
    """A Checkout Session for a pack. With an Idempotency-Key, the first request's session is
    stored with it and every repeat (same user, key and body) gets that session back; a
    different body with the key is refused. Stripe gets a key derived from it, so an attempt
    whose answer was lost (a timeout) is replayed by Stripe, not made twice. `db` is the
    request's session (its key was looked up there), so the lookup needs no connection of
    its own."""
    settings = runtime.settings
    request_hash = _request_hash(pack_name)
    packs = settings.packs()
    pack: Pack | None = packs.get(pack_name)
    if pack is None:
        # A pack is a thing on sale, named like any other resource: one not on sale is a 404,
        # whatever key came with it.
        raise NotFound(
            f"no pack {pack_name!r} is on sale: choose one of {sorted(packs)}",
            details={"packs": sorted(packs)},
        )
    scoped = _scoped(user.id, idempotency_key) if idempotency_key else None
    if idempotency_key and scoped:
        earlier = await _keyed(db, user, scoped)
        if earlier is not None:
            return _replayed(earlier, idempotency_key, request_hash)
    base = runtime.public_url
    success = settings.checkout_success_url or f"{base}/?checkout={{CHECKOUT_SESSION_ID}}"
    metadata = {"user_id": user.id, "pack": pack.name, "credits": str(pack.credits)}
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [
            {
                "quantity": 1,
                "price_data": {
                    "currency": pack.currency,
                    "unit_amount": pack.price,
                    "product_data": {"name": f"{pack.credits} RoleFerry credits"},
                },
            }
        ],
        "client_reference_id": user.id,
        "metadata": metadata,
        "payment_intent_data": {"metadata": {**metadata, "source": CHECKOUT_SOURCE}},
        "success_url": success,
        "cancel_url": settings.checkout_cancel_url or f"{base}/",
    }
    try:
        session = await _stripe(runtime).create_checkout_session(
            params,
            deadline=Deadline(settings.checkout_deadline_s),
            idempotency_key=f"rf-checkout-{scoped}" if scoped else None,
        )
    except IdempotencyConflict as exc:
        # A first attempt with this key that we never stored (it ended in a 503) had
        # another body: Stripe refuses the key as we would.
        raise _reused(idempotency_key or "", None) from exc
    except CallError as exc:
        raise unavailable(exc, "the checkout") from exc
    session_id, url = str(session.id), session.url
    stored = await _store(
        runtime.db,
        {
            "checkout_session_id": session_id,
            "user_id": user.id,
            "amount": pack.price,
            "currency": pack.currency,
            "credits": pack.credits,
            "pack": pack.name,
            "idempotency_key": scoped,
            "request_hash": request_hash if scoped else None,
            "checkout_url": url,
        },
    )
    if not stored and idempotency_key and scoped:
        # Two requests with one key at once: whichever stored its session first, both answer it.
        winner = await _keyed(db, user, scoped)
        if winner is not None:
            return _replayed(winner, idempotency_key, request_hash)
    return Checkout(session_id, url, pack.name, pack.credits, pack.price, pack.currency)


async def confirm_checkout(runtime: Runtime, user: User, session_id: str) -> CheckoutState:
    """The success page's call: the session as Stripe has it now, fulfilled if paid (through
    the webhook's own `fulfil`)."""
    async with runtime.db.session() as db:
        payment = await db.scalar(select(Payment).where(Payment.checkout_session_id == session_id))
    if payment is not None and payment.user_id not in (None, user.id):
        raise NotFound(f"no checkout {session_id}")
    try:
        session = await _stripe(runtime).retrieve_checkout_session(
            session_id,
            deadline=Deadline(runtime.settings.checkout_deadline_s),
            expand=["line_items"],
        )
    except CallError as exc:
        if isinstance(exc, InvalidRequest) and exc.status == 404:
            raise NotFound(f"no checkout {session_id}") from exc
        raise unavailable(exc, "the checkout lookup") from exc
    data = _as_dict(session)
    if data.get("client_reference_id") != user.id:
        raise NotFound(f"no checkout {session_id}")
    async with runtime.db.write_session() as db:
        outcome = await Payments(db).fulfil(data)
        row = await db.scalar(select(Payment).where(Payment.checkout_session_id == session_id))
        credits = row.credits if row else 0
    return CheckoutState(
        session_id,
        str(data.get("status")),
        str(data.get("payment_status")),
        credits,
        outcome,
    )


async def reconcile(runtime: Runtime) -> Reconciled:
    """Finds what a lost webhook would have lost: checkouts still open past
    `reconcile_after_s` are fetched and fulfilled, and Stripe's undelivered events
    (`delivery_success=false`, 30 days) go into the inbox to be applied like any other."""
    report = Reconciled()
    client = _stripe(runtime)
    settings = runtime.settings
    cutoff = utcnow() - timedelta(seconds=settings.reconcile_after_s)
    async with runtime.db.session() as db:
        stale = list(
            await db.scalars(
                select(Payment.checkout_session_id)
                .where(
                    Payment.status == "open",
                    Payment.checkout_session_id.is_not(None),
                    Payment.created_at < cutoff,
                )
                .order_by(Payment.id)
                .limit(500)
            )
        )
    for session_id in stale:
        if session_id is None:
            continue
        try:
            session = await client.retrieve_checkout_session(
                session_id, deadline=Deadline(settings.checkout_deadline_s)
            )
        except CallError as exc:
            report.outcomes.append(f"{session_id}: not fetched ({exc.kind})")
            continue
        async with runtime.db.write_session() as db:
            outcome = await Payments(db).fulfil(_as_dict(session))
        report.sessions_checked += 1
        report.outcomes.append(f"{session_id}: {outcome}")
    params: dict[str, Any] = {"delivery_success": False, "limit": 100, "types": sorted(HANDLED)}
    incoming: list[tuple[str, Incoming]] = []
    for _ in range(EVENT_PAGES):
        try:
            page = _as_dict(
                await client.list_events(params, deadline=Deadline(settings.checkout_deadline_s))
            )
        except CallError as exc:
            report.outcomes.append(f"events: not listed ({exc.kind})")
            break
        for event in page.get("data", []):
            incoming.append(
                (
                    "stripe",
                    Incoming(
                        event["id"][:128],
                        event["type"][:64],
                        float(event.get("created") or 0),
                        event,
                    ),
                )
            )
        if not page.get("has_more") or not page.get("data"):
            break
        params["starting_after"] = page["data"][-1]["id"]
    report.events_found = len(incoming)
    report.events_stored = len(await insert_new(runtime.db, incoming))
    if report.events_stored and runtime.inbox is not None:
        runtime.inbox.wake()
    log.info(
        "payments_reconciled",
        sessions=report.sessions_checked,
        events_found=report.events_found,
        events_stored=report.events_stored,
    )
    return report
