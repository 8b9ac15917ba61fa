"""End to end through the sandbox: mail sent to the simulated SendGrid comes back as signed
events that move our message's state; a payment on the simulated Stripe checkout credits the
buyer once, though Stripe sends every event twice."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import stripe
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach.models import OutreachMessage, Suppression
from roleferry.payments.models import CreditEntry
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.sandbox.world import World
from roleferry.users.models import User
from tests.support.live_server import live_server
from tests.support.webhooks import in_db


def wait(condition: object, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.1)


def test_sendgrid_events_from_the_sandbox_update_delivery_state(tmp_path: Path) -> None:
    world = World(7)
    good = next(p for p in world.companies[0].people if not p.bounces)
    gone = next(p for c in world.companies for p in c.people if p.bounces)
    with live_server(tmp_path) as live:
        url = live.runtime.settings.database_url
        live.control("sendgrid", flush_interval_s=0.1, duplicate_rate=1.0, reorder_rate=1.0)

        async def owner(session: AsyncSession) -> str:
            user = await session.scalar(select(User))
            assert user is not None
            for person, oid in ((good, "out_good"), (gone, "out_gone")):
                session.add(OutreachMessage(id=oid, user_id=user.id, email=person.email))
            return user.id

        in_db(url, owner)
        for person, oid in ((good, "out_good"), (gone, "out_gone")):
            sent = httpx.post(
                f"{live.url}/sandbox/sendgrid/v3/mail/send",
                headers={"Authorization": f"Bearer {SANDBOX_API_KEYS['sendgrid']}"},
                json={
                    "personalizations": [
                        {"to": [{"email": person.email}], "custom_args": {"outreach_id": oid}}
                    ],
                    "from": {"email": "jobs@roleferry.test"},
                    "subject": "Hello",
                    "content": [{"type": "text/plain", "value": "Hi"}],
                },
            )
            assert sent.status_code == 202

        async def states(session: AsyncSession) -> dict[str, str]:
            return {m.id: m.state for m in await session.scalars(select(OutreachMessage))}

        wait(lambda: in_db(url, states) == {"out_good": "delivered", "out_gone": "bounced"})

        async def suppressed(session: AsyncSession) -> list[str]:
            return list(await session.scalars(select(Suppression.email)))

        assert in_db(url, suppressed) == [gone.email]


def test_a_sandbox_checkout_credits_the_buyer_exactly_once(tmp_path: Path) -> None:
    with live_server(tmp_path) as live:
        url = live.runtime.settings.database_url
        live.control("stripe", duplicate_rate=1.0)
        me = httpx.get(f"{live.url}/api/v1/me", headers=live.auth).json()["id"]
        sdk = stripe.StripeClient(
            SANDBOX_API_KEYS["stripe"], base_addresses={"api": f"{live.url}/sandbox/stripe"}
        )
        session = sdk.v1.checkout.sessions.create(
            params={
                "mode": "payment",
                "line_items": [{"price": "price_credits_500", "quantity": 1}],
                "success_url": "https://app.example.com/ok",
                "client_reference_id": me,
                "metadata": {"credits": "500"},
            }
        )
        assert (
            httpx.post(session.url or "", data={"card_number": "4242424242424242"}).status_code
            == 303
        )

        async def credits(s: AsyncSession) -> tuple[int, int]:
            rows = int(
                await s.scalar(
                    select(func.count()).select_from(CreditEntry).where(CreditEntry.user_id == me)
                )
                or 0
            )
            total = int(
                await s.scalar(select(func.sum(CreditEntry.delta)).where(CreditEntry.user_id == me))
                or 0
            )
            return rows, total

        wait(lambda: in_db(url, credits) == (1, 500))
        time.sleep(1.0)
        assert in_db(url, credits) == (1, 500), "duplicates and both success events credit once"
