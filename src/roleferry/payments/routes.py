"""Buying credits (Stripe Checkout) and reading them: balance and ledger."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Query
from pydantic import BaseModel, Field
from sqlalchemy import select

from roleferry.api.deps import AdminUser, CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.errors import Unprocessable
from roleferry.payments import service
from roleferry.payments.credits import Credits
from roleferry.payments.models import CreditEntry, CreditPosting

router = APIRouter(prefix="/api/v1", tags=["payments"])

SessionId = Annotated[
    str,
    Path(
        min_length=3,
        max_length=200,
        pattern=r"^cs_[A-Za-z0-9_]+$",
        description="The Checkout Session's id, as the success URL carries it.",
    ),
]


class CheckoutIn(BaseModel):
    pack: str = Field(
        min_length=1,
        max_length=32,
        description="A pack on sale (GET /api/v1/credits lists them; by default small, medium, "
        "large); another name is a 404 that lists them.",
    )


class CheckoutOut(BaseModel):
    session_id: str
    url: str | None = Field(description="Stripe's hosted checkout page: send the buyer there.")
    pack: str
    credits: int
    amount: int = Field(description="Price in the currency's smallest unit (cents).")
    currency: str


class CheckoutStateOut(BaseModel):
    session_id: str
    status: str = Field(description="Stripe's: open, complete or expired.")
    payment_status: str = Field(description="Stripe's: paid, unpaid or no_payment_required.")
    credits: int
    outcome: str = Field(description="What this call did: credited, already credited, awaiting.")


class PackOut(BaseModel):
    name: str
    credits: int
    price: int
    currency: str


class CreditsOut(BaseModel):
    available: int
    reserved: int
    billing: str = Field(description="off: nothing costs credits on this deployment.")
    prices: dict[str, int] = Field(description="Credits per use of each feature.")
    packs: list[PackOut]


class EntryOut(BaseModel):
    id: int
    reason: str
    reference: str
    delta: int = Field(description="Change to the available credits.")
    postings: dict[str, int] = Field(
        description="Account → credits (yours: available, reserved); they sum to zero."
    )
    created_at: UtcDateTime


class LedgerOut(BaseModel):
    entries: list[EntryOut]
    next_before: int | None = Field(description="Pass as `before` for the next (older) page.")


IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{1,200}")


async def idempotency_key(
    value: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            description="1 to 200 printable ASCII characters, no spaces (a UUID will do). "
            "Repeat the request with the same key: the same checkout, never a second.",
            # Documented, and checked below with a message that says what a good key is.
            json_schema_extra={"pattern": "^[!-~]{1,200}$"},
        ),
    ] = None,
) -> str | None:
    """The client's key, checked here so a bad one is told what a good one looks like (async:
    a plain function would cost every checkout a hop to the thread pool)."""
    if value is None or IDEMPOTENCY_KEY.fullmatch(value):
        return value
    if not value:
        problem = "is empty"
    elif len(value) > 200:
        problem = f"has {len(value)} characters"
    else:
        at, bad = next((i, c) for i, c in enumerate(value) if not IDEMPOTENCY_KEY.fullmatch(c))
        problem = f"has {bad!a} at position {at + 1}"
    reason = f"Idempotency-Key {problem}: send 1 to 200 printable ASCII characters, no spaces"
    raise Unprocessable(
        f"{reason} (a UUID will do)",
        details=[{"field": "header.Idempotency-Key", "reason": reason}],
    )


IdempotencyKey = Annotated[str | None, Depends(idempotency_key)]


@router.post("/checkout", response_model=CheckoutOut, status_code=201)
async def create_checkout(
    body: CheckoutIn,
    user: CurrentUser,
    runtime: RuntimeDep,
    session: SessionDep,
    key: IdempotencyKey,
) -> CheckoutOut:
    """Starts a Stripe Checkout for a credit pack; answers within the checkout deadline."""
    made = await service.start_checkout(runtime, session, user, body.pack, key)
    return CheckoutOut(
        session_id=made.session_id,
        url=made.url,
        pack=made.pack,
        credits=made.credits,
        amount=made.amount,
        currency=made.currency,
    )


@router.get("/checkout/{session_id}", response_model=CheckoutStateOut)
async def get_checkout(
    session_id: SessionId, user: CurrentUser, runtime: RuntimeDep
) -> CheckoutStateOut:
    """The success page's call: grants the credits if the session is paid (once)."""
    state = await service.confirm_checkout(runtime, user, session_id)
    return CheckoutStateOut(
        session_id=state.session_id,
        status=state.status,
        payment_status=state.payment_status,
        credits=state.credits,
        outcome=state.outcome,
    )


@router.get("/credits", response_model=CreditsOut)
async def get_credits(user: CurrentUser, runtime: RuntimeDep) -> CreditsOut:
    settings = runtime.settings
    async with runtime.db.write_session() as db:
        balance = await Credits(db, settings).balance(user.id)
    return CreditsOut(
        available=balance.available,
        reserved=balance.reserved,
        billing=settings.billing,
        prices={k: settings.price(k) for k in ("email_found", "email_sent", "ai_draft")},
        packs=[PackOut(**vars(p)) for p in settings.packs().values()],
    )


@router.get("/credits/ledger", response_model=LedgerOut)
async def get_ledger(
    user: CurrentUser,
    runtime: RuntimeDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
) -> LedgerOut:
    """The caller's entries, newest first, with their postings."""
    async with runtime.db.session() as db:
        query = select(CreditEntry).where(CreditEntry.user_id == user.id)
        if before is not None:
            query = query.where(CreditEntry.id < before)
        entries = list(await db.scalars(query.order_by(CreditEntry.id.desc()).limit(limit)))
        legs: dict[int, dict[str, int]] = {e.id: {} for e in entries}
        if entries:
            rows = await db.execute(
                select(CreditPosting.entry_id, CreditPosting.account, CreditPosting.amount).where(
                    CreditPosting.entry_id.in_(legs)
                )
            )
            for entry_id, account, amount in rows:
                legs[entry_id][account.replace(f"user:{user.id}:", "")] = amount
    return LedgerOut(
        entries=[
            EntryOut(
                id=e.id,
                reason=e.reason,
                reference=e.reference,
                delta=e.delta,
                postings=legs[e.id],
                created_at=e.created_at,
            )
            for e in entries
        ],
        next_before=entries[-1].id if len(entries) == limit else None,
    )


class ReconcileOut(BaseModel):
    sessions_checked: int
    events_found: int
    events_stored: int = Field(description="Undelivered events new to the inbox, now applied.")
    outcomes: list[str]


@router.post("/admin/payments/reconcile", response_model=ReconcileOut)
async def run_reconcile(_admin: AdminUser, runtime: RuntimeDep) -> ReconcileOut:
    """Runs reconciliation now (it also runs on a schedule)."""
    report = await service.reconcile(runtime)
    return ReconcileOut(**vars(report))
