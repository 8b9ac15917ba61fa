"""The credit ledger: append-only and double-entry, inside the caller's transaction.

Accounts: each user's `user:<id>:available` and `user:<id>:reserved`; the house's `purchases`
and `grants` (where credits come from), `spending:<kind>` (where spent credits go) and
`refunds` (where refunded credits go). Every entry's postings sum to zero; an entry is never
changed or deleted once committed, a mistake is undone by `reverse`, a new entry.

Each operation names a `reference` that is unique across the ledger, so repeating it (a
retried request, a duplicated webhook, two fulfilments racing) changes nothing. A balance never
goes below zero: the user's balance row is updated by one conditional UPDATE in the same
transaction as the postings (a row lock on PostgreSQL; SQLite has a single writer); if it
would go negative, the operation's entry is removed before anything commits and
`InsufficientCredits` says what is there.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.payments.models import (
    CreditBalance,
    CreditEntry,
    CreditPosting,
    CreditReservation,
)
from roleferry.users.models import utcnow

PURCHASES = "purchases"
GRANTS = "grants"
REFUNDS = "refunds"
SPENDING = "spending:"


def available(user_id: str) -> str:
    return f"user:{user_id}:available"


def reserved(user_id: str) -> str:
    return f"user:{user_id}:reserved"


def spending(kind: str) -> str:
    return SPENDING + kind


class InsufficientCredits(Exception):
    """Not enough available credits for an operation; nothing was written."""

    def __init__(self, user_id: str, balance: int, needed: int) -> None:
        super().__init__(f"user {user_id} has {balance} credits available; {needed} are needed")
        self.user_id = user_id
        self.balance = balance
        self.needed = needed


class ReservationError(ValueError):
    """A reservation used beyond what it holds, or after it was closed."""


@dataclass(frozen=True)
class Balance:
    available: int
    reserved: int


class Ledger:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        bind = session.bind
        self.dialect = bind.dialect.name if bind is not None else "sqlite"

    def _insert(self, table: Any) -> Any:
        return (postgresql.insert if self.dialect == "postgresql" else sqlite.insert)(table)

    async def balance(self, user_id: str) -> Balance:
        row = await self.session.get(CreditBalance, user_id, populate_existing=True)
        return Balance(row.available, row.reserved) if row else Balance(0, 0)

    async def lock_balances(self, user_ids: Iterable[str]) -> None:
        """Locks these users' balance rows (PostgreSQL; SQLite has one writer) in user order.
        A transaction that moves several users' credits takes them here first, so two such
        transactions wait for each other instead of each holding a row the other needs."""
        ids = sorted(set(user_ids))
        if ids:
            await self.session.execute(
                select(CreditBalance.user_id)
                .where(CreditBalance.user_id.in_(ids))
                .order_by(CreditBalance.user_id)
                .with_for_update()
            )

    async def post(
        self, user_id: str, reason: str, reference: str, postings: dict[str, int]
    ) -> CreditEntry | None:
        """One entry with its postings; None if `reference` was already posted. Raises
        InsufficientCredits (writing nothing) if the user's balance would go negative."""
        legs = {account: amount for account, amount in postings.items() if amount}
        if sum(legs.values()) != 0:
            raise ValueError(f"postings must sum to zero, not {sum(legs.values())}: {legs}")
        own = {available(user_id), reserved(user_id)}
        foreign = [a for a in legs if a.startswith("user:") and a not in own]
        if foreign:
            raise ValueError(f"an entry for {user_id} cannot post to {foreign}")
        delta_available = legs.get(available(user_id), 0)
        delta_reserved = legs.get(reserved(user_id), 0)
        await self.session.execute(
            self._insert(CreditBalance)
            .values(user_id=user_id, available=0, reserved=0)
            .on_conflict_do_nothing(index_elements=["user_id"])
        )
        entry_id = (
            await self.session.execute(
                self._insert(CreditEntry)
                .values(
                    user_id=user_id,
                    delta=delta_available,
                    reason=reason,
                    reference=reference,
                    created_at=utcnow(),
                )
                .on_conflict_do_nothing(index_elements=["reference"])
                .returning(CreditEntry.id)
            )
        ).scalar()
        if entry_id is None:
            return None
        changed = (
            await self.session.execute(
                update(CreditBalance)
                .where(
                    CreditBalance.user_id == user_id,
                    CreditBalance.available + delta_available >= 0,
                    CreditBalance.reserved + delta_reserved >= 0,
                )
                .values(
                    available=CreditBalance.available + delta_available,
                    reserved=CreditBalance.reserved + delta_reserved,
                )
                .returning(CreditBalance.user_id)
            )
        ).scalar()
        if changed is None:
            await self.session.execute(delete(CreditEntry).where(CreditEntry.id == entry_id))
            now = await self.balance(user_id)
            raise InsufficientCredits(user_id, now.available, -delta_available)
        if legs:
            await self.session.execute(
                self._insert(CreditPosting),
                [
                    {"entry_id": entry_id, "account": a, "amount": n}
                    for a, n in sorted(legs.items())
                ],
            )
        return await self.session.get(CreditEntry, entry_id)

    async def grant(self, user_id: str, credits: int, reference: str) -> CreditEntry | None:
        """Free credits (a new user's starting grant, a goodwill grant)."""
        return await self.post(
            user_id, "grant", reference, {GRANTS: -credits, available(user_id): credits}
        )

    async def purchase(self, user_id: str, credits: int, reference: str) -> CreditEntry | None:
        return await self.post(
            user_id, "purchase", reference, {PURCHASES: -credits, available(user_id): credits}
        )

    async def spend(
        self, user_id: str, kind: str, credits: int, reference: str
    ) -> CreditEntry | None:
        return await self.post(
            user_id,
            f"spend:{kind}"[:32],
            reference,
            {available(user_id): -credits, spending(kind): credits},
        )

    async def refund(self, user_id: str, credits: int, reference: str) -> int:
        """Takes back up to `credits` (a refunded purchase); what was already spent cannot be
        taken back and is left as it is. Returns what was taken."""
        row = await self.session.scalar(
            select(CreditBalance).where(CreditBalance.user_id == user_id).with_for_update()
        )
        taken = min(credits, row.available if row else 0)
        if taken <= 0:
            return 0
        entry = await self.post(
            user_id, "refund", reference, {available(user_id): -taken, REFUNDS: taken}
        )
        return taken if entry is not None else 0

    async def reverse(self, entry_id: int, reference: str) -> CreditEntry | None:
        """Undoes an entry with a new one of opposite postings (entries are never edited)."""
        entry = await self.session.get(CreditEntry, entry_id)
        if entry is None:
            raise ValueError(f"no ledger entry {entry_id}")
        legs = await self.session.scalars(
            select(CreditPosting).where(CreditPosting.entry_id == entry_id)
        )
        return await self.post(
            entry.user_id, "reversal", reference, {p.account: -p.amount for p in legs}
        )

    async def reserve(
        self, user_id: str, kind: str, credits: int, reference: str
    ) -> CreditReservation:
        """Holds `credits` for a piece of work; the same reference returns the same hold."""
        existing = await self.reservation(reference)
        if existing is not None:
            return existing
        await self.post(
            user_id,
            "reserve",
            f"reserve:{reference}",
            {available(user_id): -credits, reserved(user_id): credits},
        )
        await self.session.execute(
            self._insert(CreditReservation)
            .values(
                user_id=user_id,
                kind=kind,
                reference=reference,
                held=credits,
                used=0,
                status="open",
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["reference"])
        )
        found = await self.reservation(reference)
        assert found is not None
        return found

    async def commit(self, reservation: CreditReservation, credits: int, reference: str) -> bool:
        """Spends `credits` out of a hold; False if `reference` was already committed."""
        await self.session.refresh(reservation, with_for_update=True)
        if reservation.status != "open":
            raise ReservationError(f"reservation {reservation.reference} is closed")
        if credits > reservation.held - reservation.used:
            raise ReservationError(
                f"reservation {reservation.reference} has "
                f"{reservation.held - reservation.used} credits left; {credits} were asked for"
            )
        user = reservation.user_id
        entry = await self.post(
            user,
            f"spend:{reservation.kind}"[:32],
            reference,
            {reserved(user): -credits, spending(reservation.kind): credits},
        )
        if entry is not None:
            reservation.used += credits
        await self.session.flush()
        return entry is not None

    async def release(self, reservation: CreditReservation) -> int:
        """Closes a hold, giving back what it did not use; returns that amount."""
        await self.session.refresh(reservation, with_for_update=True)
        if reservation.status != "open":
            return 0
        rest = reservation.held - reservation.used
        user = reservation.user_id
        await self.post(
            user,
            "release",
            f"release:{reservation.reference}",
            {reserved(user): -rest, available(user): rest},
        )
        reservation.status = "closed"
        await self.session.flush()
        return rest

    async def reservation(self, reference: str) -> CreditReservation | None:
        """The hold made under `reference` (open or closed), if any."""
        found: CreditReservation | None = await self.session.scalar(
            select(CreditReservation).where(CreditReservation.reference == reference)
        )
        return found
