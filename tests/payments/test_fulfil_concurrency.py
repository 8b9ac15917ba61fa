"""`fulfil` racing itself on SQLite and PostgreSQL: many transactions fulfilling the same paid
session at once grant it once; and spending past the balance is a 402 that says how to buy."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from roleferry.db import Database
from roleferry.payments.credits import Credits, PaymentRequired
from roleferry.payments.fulfilment import Payments
from roleferry.payments.models import CreditBalance, CreditEntry, Payment
from roleferry.users import service
from tests.conftest import make_settings


def paid_session(user_id: str, session_id: str = "cs_test_race") -> dict[str, object]:
    return {
        "id": session_id,
        "object": "checkout.session",
        "client_reference_id": user_id,
        "payment_status": "paid",
        "status": "complete",
        "amount_total": 1000,
        "currency": "usd",
        "payment_intent": "pi_test_race",
        "metadata": {"credits": "100", "pack": "small"},
    }


def test_concurrent_fulfils_grant_once(database_url: str) -> None:
    """Twelve transactions fulfil one paid session at once: one grant of 100, one row."""

    async def run() -> None:
        db = Database(database_url)
        try:
            async with db.session() as session:
                user = (await service.create_user(session, "race@example.com")).user.id

            async def fulfil() -> str:
                async with db.write_session() as session:
                    return await Payments(session).fulfil(paid_session(user))

            outcomes = await asyncio.gather(*(fulfil() for _ in range(12)))
            assert sorted(outcomes).count("credited 100") == 1
            assert outcomes.count("already credited") == 11
            async with db.session() as session:
                entries = await session.scalar(select(func.count()).select_from(CreditEntry))
                rows = await session.scalar(select(func.count()).select_from(Payment))
                balance = await session.get(CreditBalance, user)
            assert (entries, rows) == (1, 1)
            assert balance is not None
            assert balance.available == 100
        finally:
            await db.dispose()

    asyncio.run(run())


def test_spending_past_the_balance_is_a_402_with_the_balance_and_price(
    tmp_path: Path, sqlite_url: str
) -> None:
    """A draft at 2 credits with 1 left: 402 insufficient_credits naming both and the way to
    buy; with billing off the same spend costs nothing."""

    async def run() -> None:
        db = Database(sqlite_url)
        try:
            async with db.session() as session:
                user = (await service.create_user(session, "spender@example.com")).user.id
            settings = make_settings(tmp_path, starting_credits=1, billing="on")
            with pytest.raises(PaymentRequired) as raised:
                async with db.write_session() as session:
                    await Credits(session, settings).charge(user, "ai_draft", 1, "draft:1")
            assert raised.value.status_code == 402
            assert raised.value.details == {
                "balance": 1,
                "needed": 2,
                "kind": "ai_draft",
                "price": 2,
            }
            assert "POST /api/v1/checkout" in raised.value.message
            off = make_settings(tmp_path, starting_credits=1, billing="off")
            async with db.write_session() as session:
                assert await Credits(session, off).charge(user, "ai_draft", 1, "draft:1") == 0
                assert (await Credits(session, off).balance(user)).available == 1
        finally:
            await db.dispose()

    asyncio.run(run())
