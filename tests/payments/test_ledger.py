"""The ledger's invariants under random sequences of grants, purchases, spends,
reservations, commits, releases and refunds, repeated references included: every entry's
postings sum to zero, no balance goes below zero, each reference posts once, and the balance
row equals the sum of the user's postings."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from roleferry.db import Database
from roleferry.payments.ledger import (
    InsufficientCredits,
    Ledger,
    ReservationError,
    available,
    reserved,
)
from roleferry.payments.models import CreditBalance, CreditEntry, CreditPosting
from roleferry.users import service

Op = tuple[str, int, int]
OPS = st.lists(
    st.tuples(
        st.sampled_from(
            ["grant", "purchase", "spend", "reserve", "commit", "release", "refund", "reverse"]
        ),
        st.integers(0, 60),
        st.integers(0, 5),
    ),
    max_size=40,
)


async def _user(db: Database, email: str) -> str:
    async with db.session() as session:
        return (await service.create_user(session, email)).user.id


async def _apply(db: Database, user: str, ops: list[Op], tag: str) -> None:
    """Each op in its own transaction; the third number picks a reference from a few, so
    references repeat."""
    holds: list[str] = []
    for kind, amount, pick in ops:
        ref = f"{tag}:{kind}:{pick}"
        try:
            async with db.write_session() as session:
                ledger = Ledger(session)
                if kind == "grant":
                    await ledger.grant(user, amount, ref)
                elif kind == "purchase":
                    await ledger.purchase(user, amount, ref)
                elif kind == "spend":
                    await ledger.spend(user, "email_found", amount, ref)
                elif kind == "reserve":
                    await ledger.reserve(user, "email_found", amount, ref)
                    holds.append(ref)
                elif kind in ("commit", "release") and holds:
                    found = await ledger.reservation(holds[pick % len(holds)])
                    assert found is not None
                    if kind == "commit":
                        await ledger.commit(found, amount, f"{ref}:{len(holds)}")
                    else:
                        await ledger.release(found)
                elif kind == "refund":
                    await ledger.refund(user, amount, ref)
                elif kind == "reverse":
                    last = await session.scalar(
                        select(func.max(CreditEntry.id)).where(CreditEntry.user_id == user)
                    )
                    if last:
                        await ledger.reverse(last, f"{ref}:{last}")
        except (InsufficientCredits, ReservationError):
            pass


async def _check(db: Database, user: str) -> None:
    async with db.session() as session:
        unbalanced = await session.scalar(
            select(func.count()).select_from(
                select(CreditPosting.entry_id)
                .group_by(CreditPosting.entry_id)
                .having(func.sum(CreditPosting.amount) != 0)
                .subquery()
            )
        )
        assert unbalanced == 0
        row = await session.get(CreditBalance, user)
        if row is None:
            return
        assert row.available >= 0
        assert row.reserved >= 0

        async def total(account: str) -> int:
            value = await session.scalar(
                select(func.coalesce(func.sum(CreditPosting.amount), 0)).where(
                    CreditPosting.account == account
                )
            )
            return int(value or 0)

        assert row.available == await total(available(user))
        assert row.reserved == await total(reserved(user))
        everything = await session.scalar(select(func.coalesce(func.sum(CreditPosting.amount), 0)))
        assert everything == 0
        delta = await session.scalar(
            select(func.coalesce(func.sum(CreditEntry.delta), 0)).where(CreditEntry.user_id == user)
        )
        assert delta == row.available


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(ops=OPS)
def test_random_sequences_keep_the_invariants(sqlite_url: str, ops: list[Op]) -> None:
    """Any sequence, references repeated: sums to zero, never negative, balance = postings."""

    async def run() -> None:
        db = Database(sqlite_url)
        try:
            user = await _user(db, f"u{id(ops)}-{len(ops)}-{abs(hash(str(ops)))}@example.com")
            await _apply(db, user, ops, "seq")
            await _check(db, user)
        finally:
            await db.dispose()

    asyncio.run(run())


@settings(
    max_examples=10,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(a=OPS, b=OPS)
def test_interleaved_writers_keep_the_invariants(
    database_url: str, a: list[Op], b: list[Op]
) -> None:
    """Two concurrent writers on one user, sharing references: the same invariants (on
    PostgreSQL truly at once, under row locks)."""

    async def run() -> None:
        db = Database(database_url)
        try:
            user = await _user(db, f"i{abs(hash(str((a, b))))}-{len(a)}@example.com")
            await asyncio.gather(_apply(db, user, a, "x"), _apply(db, user, b, "x"))
            await _check(db, user)
        finally:
            await db.dispose()

    asyncio.run(run())


async def _ledger_user(url: str) -> tuple[Database, str]:
    db = Database(url)
    return db, await _user(db, "one@example.com")


def test_spending_more_than_available_is_refused_and_writes_nothing(sqlite_url: str) -> None:
    """A spend past the balance raises with the balance and writes no entry."""

    async def run() -> None:
        db, user = await _ledger_user(sqlite_url)
        try:
            async with db.write_session() as session:
                await Ledger(session).grant(user, 5, "g")
            with pytest.raises(InsufficientCredits) as raised:
                async with db.write_session() as session:
                    await Ledger(session).spend(user, "ai_draft", 6, "s")
            assert (raised.value.balance, raised.value.needed) == (5, 6)
            async with db.session() as session:
                refs = list(await session.scalars(select(CreditEntry.reference)))
                assert refs == ["g"]
        finally:
            await db.dispose()

    asyncio.run(run())


def test_reserve_commit_release_settles_to_what_was_used(sqlite_url: str) -> None:
    """A job holds 10, uses 3: 3 spent, 7 back, nothing reserved."""

    async def run() -> None:
        db, user = await _ledger_user(sqlite_url)
        try:
            async with db.write_session() as session:
                ledger = Ledger(session)
                await ledger.grant(user, 10, "g")
                hold = await ledger.reserve(user, "email_found", 10, "job1")
                assert (await ledger.balance(user)).available == 0
                await ledger.commit(hold, 2, "job1:a")
                await ledger.commit(hold, 1, "job1:b")
                assert not await ledger.commit(hold, 1, "job1:b")
                assert await ledger.release(hold) == 7
                balance = await ledger.balance(user)
                assert (balance.available, balance.reserved) == (7, 0)
            await _check(db, user)
        finally:
            await db.dispose()

    asyncio.run(run())
