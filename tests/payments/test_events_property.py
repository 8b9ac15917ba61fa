"""Stripe's events for several checkouts, duplicated, reordered and applied by concurrent
transactions (webhook, success page, reconciliation): whatever the order, each paid session
is granted once, refunds take back at most their share, failures grant nothing, no balance
goes below zero and every entry's postings sum to zero."""

from __future__ import annotations

import asyncio
import random
import uuid
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from roleferry.db import Database
from roleferry.payments.fulfilment import apply_event
from roleferry.payments.models import CreditBalance, CreditEntry, CreditPosting
from roleferry.runtime import Runtime
from roleferry.users import service
from tests.conftest import make_settings

SESSIONS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """SQLite (one writer at a time) and PostgreSQL (row locks, real concurrency)."""
    overrides = {}
    if request.param == "postgresql":
        overrides["database_url"] = request.getfixturevalue("postgres_url")
    settings = make_settings(tmp_path, **overrides)
    Runtime(settings).migrate()
    return settings.database_url


def events_for(n: str, user: str, paid: bool, later: bool, refund: int) -> list[tuple[str, Any]]:
    session = {
        "id": f"cs_test_{n}",
        "client_reference_id": user,
        "amount_total": 1000,
        "currency": "usd",
        "payment_intent": f"pi_test_{n}",
        "metadata": {"credits": "100"},
        "status": "complete",
        "payment_status": "paid" if paid and not later else "unpaid",
    }
    intent = {"id": f"pi_test_{n}", "amount": 1000, "amount_received": 1000, "metadata": {}}
    out: list[tuple[str, Any]] = [("checkout.session.completed", session)]
    if later:
        settled = {**session, "payment_status": "paid" if paid else "unpaid"}
        kind = "succeeded" if paid else "failed"
        out.append((f"checkout.session.async_payment_{kind}", settled))
    if paid:
        out.append(("payment_intent.succeeded", {**intent, "metadata": {"source": "x"}}))
        if refund:
            charge = {"id": f"ch_{n}", "payment_intent": f"pi_test_{n}", "amount": 1000}
            out.append(("charge.refunded", {**charge, "amount_refunded": refund}))
    else:
        out.append(("payment_intent.payment_failed", {**intent, "last_payment_error": None}))
    return out


PLANS = st.lists(
    st.tuples(st.booleans(), st.booleans(), st.sampled_from([0, 250, 1000])),
    min_size=1,
    max_size=SESSIONS,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(plans=PLANS, seed=st.integers(0, 10_000), copies=st.integers(1, 3))
def test_events_in_any_order_and_number_grant_each_paid_session_once(
    database_url: str, plans: list[tuple[bool, bool, int]], seed: int, copies: int
) -> None:
    """Duplicated, shuffled, applied by three concurrent appliers: the invariants hold."""

    async def run() -> None:
        db = Database(database_url)
        tag = uuid.uuid4().hex[:12]
        try:
            async with db.session() as session:
                user = (await service.create_user(session, f"{tag}@example.com")).user.id
            events = [
                e
                for n, (paid, later, refund) in enumerate(plans)
                for e in events_for(f"{tag}_{n}", user, paid, later, refund)
            ] * copies
            random.Random(seed).shuffle(events)
            queue = list(events)

            async def applier() -> None:
                while queue:
                    kind, obj = queue.pop()
                    async with db.write_session() as session:
                        await apply_event(session, kind, obj)

            await asyncio.gather(applier(), applier(), applier())
            async with db.session() as session:
                purchases = await session.scalar(
                    select(func.count())
                    .select_from(CreditEntry)
                    .where(CreditEntry.user_id == user, CreditEntry.reason == "purchase")
                )
                balance = await session.get(CreditBalance, user)
                unbalanced = await session.scalar(
                    select(func.count()).select_from(
                        select(CreditPosting.entry_id)
                        .group_by(CreditPosting.entry_id)
                        .having(func.sum(CreditPosting.amount) != 0)
                        .subquery()
                    )
                )
            paid = sum(1 for p, _later, _refund in plans if p)
            assert purchases == paid
            assert unbalanced == 0
            held = balance.available if balance else 0
            assert held >= 0
            # Refunds take back their share of what is there, once per refunded total.
            taken = sum(100 * r // 1000 for p, _later, r in plans if p)
            assert held == 100 * paid - taken
        finally:
            await db.dispose()

    asyncio.run(run())
