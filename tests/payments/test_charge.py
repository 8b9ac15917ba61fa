"""`charge` and `undo`, the calls features that cost make (an email sent, an AI draft): once per
reference however often or concurrently they are repeated, a 402 when the credits are not
there, and a charge whose work did not happen given back once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from roleferry.db import Database
from roleferry.payments.credits import Credits, PaymentRequired, charge, undo
from roleferry.payments.models import CreditEntry
from roleferry.payments.settings import PaymentSettings
from roleferry.users import service
from tests.conftest import make_settings


async def _user(db: Database) -> str:
    async with db.session() as session:
        return (await service.create_user(session, "sender@example.com")).user.id


async def _available(db: Database, settings: PaymentSettings, user: str) -> int:
    async with db.write_session() as session:
        return (await Credits(session, settings).balance(user)).available


def test_a_charge_repeated_concurrently_spends_once(tmp_path: Path, database_url: str) -> None:
    """Eight concurrent charges of one sent email (one reference): 1 credit spent, one entry;
    another reference spends again."""
    settings = make_settings(tmp_path, database_url=database_url, billing="on")

    async def run() -> None:
        db = Database(database_url)
        try:
            user = await _user(db)
            spent = await asyncio.gather(
                *(charge(db, settings, user, "email_sent", "email_sent:msg_1") for _ in range(8))
            )
            assert sorted(spent) == [0] * 7 + [1]
            assert await charge(db, settings, user, "email_sent", "email_sent:msg_2") == 1
            assert await _available(db, settings, user) == settings.starting_credits - 2
            async with db.session() as session:
                entries = await session.scalar(
                    select(func.count())
                    .select_from(CreditEntry)
                    .where(CreditEntry.reference.like("email_sent:%"))
                )
            assert entries == 2
        finally:
            await db.dispose()

    asyncio.run(run())


def test_a_charge_without_the_credits_is_a_402_and_spends_nothing(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Three drafts' worth of units at 2 credits each with 5 left: 402 with what is needed;
    the balance is untouched."""
    settings = make_settings(tmp_path, billing="on", starting_credits=5)

    async def run() -> None:
        db = Database(sqlite_url)
        try:
            user = await _user(db)
            with pytest.raises(PaymentRequired) as raised:
                await charge(db, settings, user, "ai_draft", "draft:d1", units=3)
            assert raised.value.details == {
                "balance": 5,
                "needed": 6,
                "kind": "ai_draft",
                "price": 2,
            }
            assert await _available(db, settings, user) == 5
        finally:
            await db.dispose()

    asyncio.run(run())


def test_undo_gives_a_charge_back_once(tmp_path: Path, sqlite_url: str) -> None:
    """A draft charged then undone (the model failed): 2 credits back, once; undoing a
    reference never charged gives nothing; the charge itself stays spent-once."""
    settings = make_settings(tmp_path, billing="on", starting_credits=10)

    async def run() -> None:
        db = Database(sqlite_url)
        try:
            user = await _user(db)
            assert await charge(db, settings, user, "ai_draft", "draft:d2") == 2
            assert await _available(db, settings, user) == 8
            assert await undo(db, settings, "draft:d2") == 2
            assert await undo(db, settings, "draft:d2") == 0
            assert await undo(db, settings, "draft:never") == 0
            assert await charge(db, settings, user, "ai_draft", "draft:d2") == 0
            assert await _available(db, settings, user) == 10
        finally:
            await db.dispose()

    asyncio.run(run())


def test_with_billing_off_nothing_is_charged(tmp_path: Path, sqlite_url: str) -> None:
    settings = make_settings(tmp_path, billing="off", starting_credits=0)

    async def run() -> None:
        db = Database(sqlite_url)
        try:
            user = await _user(db)
            assert await charge(db, settings, user, "email_sent", "email_sent:m") == 0
            assert await undo(db, settings, "email_sent:m") == 0
        finally:
            await db.dispose()

    asyncio.run(run())
