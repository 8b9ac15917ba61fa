"""Spending credits, for the features that cost them: a charge for one use (`charge`, once per
reference; `undo` gives it back when the work did not happen), or a reservation for a bulk job
(its maximum held at the start, settled to what it used at the end; `metered` for one request).

Prices come from settings (`ROLEFERRY_CREDIT_PRICES`); with `ROLEFERRY_BILLING=off` nothing
costs anything. A user's starting grant (`ROLEFERRY_STARTING_CREDITS`) is posted the first
time their credits are looked at, once (reference `welcome:<user>`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.errors import ApiError
from roleferry.payments.ledger import Balance, InsufficientCredits, Ledger
from roleferry.payments.models import CreditBalance, CreditEntry, CreditReservation
from roleferry.payments.settings import PaymentSettings


class PaymentRequired(ApiError):
    status_code, code = 402, "insufficient_credits"


def payment_required(exc: InsufficientCredits, kind: str, price: int) -> PaymentRequired:
    return PaymentRequired(
        f"not enough credits: {exc.needed} needed, {exc.balance} available; buy a pack with "
        'POST /api/v1/checkout {"pack": ...} (GET /api/v1/credits lists the packs)',
        details={"balance": exc.balance, "needed": exc.needed, "kind": kind, "price": price},
    )


class Credits:
    def __init__(self, session: AsyncSession, settings: PaymentSettings) -> None:
        self.session = session
        self.settings = settings
        self.ledger = Ledger(session)

    async def welcome(self, user_id: str) -> None:
        if self.settings.starting_credits > 0:
            await self.ledger.grant(user_id, self.settings.starting_credits, f"welcome:{user_id}")

    async def balance(self, user_id: str) -> Balance:
        await self.welcome(user_id)
        return await self.ledger.balance(user_id)

    async def check(self, user_id: str, kind: str, units: int) -> None:
        """402 unless `units` uses of `kind` are available now. Reads only (a new user's
        starting grant counts before it is posted), for a hot path whose hold comes later."""
        price = self.settings.price(kind)
        if price == 0 or units <= 0:
            return
        row = await self.session.get(CreditBalance, user_id, populate_existing=True)
        have = row.available if row is not None else self.settings.starting_credits
        if have < price * units:
            raise payment_required(InsufficientCredits(user_id, have, price * units), kind, price)

    async def charge(self, user_id: str, kind: str, units: int, reference: str) -> int:
        """Spends `units` uses of `kind` now; 402 if the credits are not there. Returns the
        credits spent (0 if billing is off or `reference` was already charged)."""
        price = self.settings.price(kind)
        if price == 0 or units <= 0:
            return 0
        await self.welcome(user_id)
        try:
            entry = await self.ledger.spend(user_id, kind, price * units, reference)
        except InsufficientCredits as exc:
            raise payment_required(exc, kind, price) from exc
        return price * units if entry is not None else 0

    async def undo(self, reference: str) -> int:
        """Gives back a charge whose work did not happen (a send that failed for good), by a
        new entry (`undo:<reference>`); returns the credits given back, 0 if there was no
        such charge or it was undone already."""
        entry = await self.session.scalar(
            select(CreditEntry).where(
                CreditEntry.reference == reference, CreditEntry.reason.startswith("spend:")
            )
        )
        if entry is None or await self.ledger.reverse(entry.id, f"undo:{reference}") is None:
            return 0
        return -entry.delta

    async def reserve(
        self, user_id: str, kind: str, units: int, reference: str
    ) -> CreditReservation | None:
        """Holds the credits of up to `units` uses; None when they cost nothing."""
        price = self.settings.price(kind)
        if price == 0 or units <= 0:
            return None
        await self.welcome(user_id)
        try:
            return await self.ledger.reserve(user_id, kind, price * units, reference)
        except InsufficientCredits as exc:
            raise payment_required(exc, kind, price) from exc

    async def commit(self, reservation: CreditReservation, units: int, reference: str) -> bool:
        """Spends `units` uses out of a reservation (priced at today's price)."""
        price = self.settings.price(reservation.kind)
        return await self.ledger.commit(reservation, price * units, reference)

    async def release(self, reservation: CreditReservation) -> int:
        return await self.ledger.release(reservation)

    async def settle(self, hold_id: int, units: int, reference: str) -> None:
        """Closes a hold: spends `units` uses out of it (once per `reference`) and gives back
        the rest."""
        hold = await self.session.get(CreditReservation, hold_id)
        assert hold is not None
        if units:
            await self.commit(hold, units, reference)
        await self.release(hold)


async def charge(
    database: Database,
    settings: PaymentSettings,
    user_id: str,
    kind: str,
    reference: str,
    units: int = 1,
) -> int:
    """`Credits.charge` in a write transaction of its own, for work outside one: spends
    `units` uses of `kind` once per `reference` (a repeat spends nothing and returns 0);
    raises PaymentRequired (402, with the balance and how to buy) when they are not there."""
    async with database.write_session() as session:
        return await Credits(session, settings).charge(user_id, kind, units, reference)


async def undo(database: Database, settings: PaymentSettings, reference: str) -> int:
    """`Credits.undo` in a write transaction of its own."""
    async with database.write_session() as session:
        return await Credits(session, settings).undo(reference)


@dataclass
class Meter:
    """What a metered piece of work used; set `used` before it ends."""

    used: int = 0


@asynccontextmanager
async def metered(
    database: Database,
    settings: PaymentSettings,
    user_id: str,
    kind: str,
    most: int,
    reference: str,
) -> AsyncIterator[Meter]:
    """Holds the price of up to `most` uses (402 if the credits are not there) before the
    work, each step in a write transaction of its own (none stays open across provider
    calls); afterwards spends what `Meter.used` says and releases the rest, also when the
    work failed."""
    async with database.write_session() as session:
        hold = await Credits(session, settings).reserve(user_id, kind, most, reference)
    meter = Meter()
    try:
        yield meter
    finally:
        if hold is not None:
            async with database.write_session() as session:
                await Credits(session, settings).settle(
                    hold.id, min(meter.used, most), f"{reference}:used"
                )
