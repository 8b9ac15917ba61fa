"""Receiving: verified on raw bytes, stored once per event id before the 2xx, applied by the
processor with out-of-order-safe effects; refused deliveries change nothing."""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach.models import OutreachMessage, Suppression
from roleferry.payments.models import CreditEntry, Payment
from roleferry.webhooks.models import WebhookEvent
from tests.api.test_http_basics import assert_error_shape
from tests.conftest import bearer, create_user
from tests.support.webhooks import (
    dumps,
    sendgrid_event,
    sendgrid_headers,
    stripe_event,
    stripe_headers,
)

T = TypeVar("T")


def db(client: TestClient, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    runtime = client.app.state.runtime  # type: ignore[attr-defined]

    async def go() -> T:
        async with runtime.db.session() as session:
            result = await fn(session)
            await session.commit()
            return result

    return client.portal.call(go)  # type: ignore[union-attr]


def count(client: TestClient, model: Any, *where: Any) -> int:
    async def go(session: AsyncSession) -> int:
        return int(await session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    return db(client, go)


def wait_applied(client: TestClient, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while count(client, WebhookEvent, WebhookEvent.status == "pending"):
        assert time.monotonic() < deadline, "events still pending"
        time.sleep(0.05)


def post_sendgrid(client: TestClient, events: list[dict[str, Any]], **kw: Any) -> Any:
    body = dumps(events)
    return client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(body, **kw))


def add_message(client: TestClient, email: str, message_id: str = "msg0") -> str:
    user = create_user(client, f"sender-{random.random()}@example.com")
    owner = client.get("/api/v1/me", headers=bearer(user)).json()["id"]

    async def go(session: AsyncSession) -> str:
        message = OutreachMessage(user_id=owner, message_id=message_id, email=email)
        session.add(message)
        await session.flush()
        return message.id

    return db(client, go)


def message(client: TestClient, outreach_id: str) -> OutreachMessage:
    async def go(session: AsyncSession) -> OutreachMessage:
        found = await session.get(OutreachMessage, outreach_id)
        assert found is not None
        return found

    return db(client, go)


def test_a_signed_batch_is_stored_once_and_acknowledged(client: TestClient) -> None:
    events = [sendgrid_event("delivered", f"p{i}@example.com") for i in range(5)]
    first = post_sendgrid(client, events)
    assert first.status_code == 200
    assert first.json() == {"accepted": 5, "duplicates": 0}
    again = post_sendgrid(client, [*events[:3], sendgrid_event("open", "x@example.com")])
    assert again.json() == {"accepted": 1, "duplicates": 3}
    assert count(client, WebhookEvent) == 6


@pytest.mark.parametrize(
    ("change", "outcome"),
    [
        ("tampered", "invalid_signature"),
        ("wrong_key", "invalid_signature"),
        ("stale", "stale_timestamp"),
        ("future", "stale_timestamp"),
        ("unsigned", "invalid_signature"),
    ],
)
def test_refused_sendgrid_deliveries_change_nothing(
    client: TestClient, change: str, outcome: str
) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    body = dumps([sendgrid_event("bounce", "victim@example.com")])
    headers = sendgrid_headers(body)
    if change == "tampered":
        body = body.replace(b"bounce", b"click")
    elif change == "wrong_key":
        headers = sendgrid_headers(body, ec.generate_private_key(ec.SECP256R1()))
    elif change in ("stale", "future"):
        headers = sendgrid_headers(
            body, timestamp=int(time.time()) + (-700 if change == "stale" else 700)
        )
    else:
        headers = {"content-type": "application/json"}
    response = client.post("/webhooks/sendgrid", content=body, headers=headers)
    assert response.status_code == 401
    assert_error_shape(response.json(), outcome)
    assert count(client, WebhookEvent) == 0
    assert count(client, Suppression) == 0
    assert (
        f'roleferry_webhook_requests_total{{outcome="{outcome}",provider="sendgrid"}}'
        in client.get("/metrics").text
    )


def test_malformed_json_after_a_valid_signature_is_400(client: TestClient) -> None:
    for body in (b"[{not json", b'{"an": "object"}', b'[{"no_event_type": 1}]'):
        response = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(body))
        assert response.status_code == 400
        assert_error_shape(response.json(), "malformed")
    assert count(client, WebhookEvent) == 0


def test_over_5_mib_is_413(client: TestClient) -> None:
    body = b"[" + b" " * (5 * 1024 * 1024) + b"]"
    response = client.post("/webhooks/sendgrid", content=body, headers=sendgrid_headers(body))
    assert response.status_code == 413
    assert (
        'roleferry_webhook_requests_total{outcome="too_large",provider="sendgrid"}'
        in client.get("/metrics").text
    )


def test_out_of_order_events_end_in_the_right_state(client: TestClient) -> None:
    outreach_id = add_message(client, "dana@acme.io")
    kwargs = {"outreach_id": outreach_id}
    post_sendgrid(client, [sendgrid_event("open", "dana@acme.io", **kwargs)])
    post_sendgrid(client, [sendgrid_event("bounce", "dana@acme.io", **kwargs)])
    post_sendgrid(
        client,
        [
            sendgrid_event("delivered", "dana@acme.io", **kwargs),
            sendgrid_event("processed", "dana@acme.io", **kwargs),
        ],
    )
    wait_applied(client)
    final = message(client, outreach_id)
    assert final.state == "bounced", "a late delivered never overwrites a bounce"
    assert final.opens == 1
    assert count(client, Suppression, Suppression.email == "dana@acme.io") == 1


def test_events_match_by_message_id_and_unknown_ones_are_kept(client: TestClient) -> None:
    outreach_id = add_message(client, "sam@acme.io", message_id="XMSG1")
    post_sendgrid(
        client,
        [
            sendgrid_event("delivered", "sam@acme.io", sg_message_id="XMSG1.filterdrecv-1.0.0"),
            sendgrid_event("click", "sam@acme.io", sg_message_id="XMSG1.filterdrecv-1.0.0"),
            sendgrid_event("spamreport", "stranger@acme.io", sg_message_id="OTHER.filter.0.0"),
        ],
    )
    wait_applied(client)
    found = message(client, outreach_id)
    assert (found.state, found.clicks) == ("delivered", 1)
    events = client.get(
        "/api/v1/admin/webhook-events",
        headers=bearer(create_user(client, "admin@x.io", is_admin=True)),
    ).json()
    unknown = next(e for e in events if e["payload"]["email"] == "stranger@acme.io")
    assert unknown["status"] == "applied"
    assert "unmatched" in unknown["outcome"]
    assert count(client, Suppression, Suppression.email == "stranger@acme.io") == 1


def post_stripe(client: TestClient, event: dict[str, Any]) -> Any:
    body = dumps(event)
    return client.post("/webhooks/stripe", content=body, headers=stripe_headers(body))


def test_a_payment_credits_its_user_exactly_once(client: TestClient) -> None:
    key = create_user(client, "buyer@example.com")
    user_id = client.get("/api/v1/me", headers=bearer(key)).json()["id"]
    session = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "payment_status": "paid",
        "amount_total": 1000,
        "currency": "usd",
        "client_reference_id": user_id,
        "payment_intent": "pi_test_1",
        "metadata": {},
    }
    intent = {
        "id": "pi_test_1",
        "object": "payment_intent",
        "amount": 1000,
        "amount_received": 1000,
    }
    completed = stripe_event("checkout.session.completed", session)
    for event in (
        completed,
        completed,
        stripe_event("payment_intent.succeeded", intent),
        stripe_event("payment_intent.payment_failed", intent),
    ):
        assert post_stripe(client, event).status_code == 200
    wait_applied(client)
    assert count(client, CreditEntry, CreditEntry.user_id == user_id) == 1

    async def state(session_: AsyncSession) -> tuple[str, int]:
        payment = await session_.scalar(
            select(Payment).where(Payment.payment_intent_id == "pi_test_1")
        )
        assert payment is not None
        credits = await session_.scalar(
            select(func.sum(CreditEntry.delta)).where(CreditEntry.user_id == user_id)
        )
        return payment.status, int(credits or 0)

    assert db(client, state) == ("paid", 100), "a late payment_failed does not undo a payment"
    refund = {
        "id": "ch_1",
        "object": "charge",
        "payment_intent": "pi_test_1",
        "amount": 1000,
        "amount_refunded": 400,
    }
    post_stripe(client, stripe_event("charge.refunded", refund))
    post_stripe(client, stripe_event("charge.refunded", refund))
    wait_applied(client)
    assert db(client, state) == ("partially_refunded", 60)


def test_refused_stripe_deliveries_change_nothing(client: TestClient) -> None:
    event = stripe_event("checkout.session.completed", {"id": "cs_x"})
    body = dumps(event)
    for headers in (
        stripe_headers(body, "whsec_wrong"),
        stripe_headers(body, timestamp=int(time.time()) - 400),
        {"content-type": "application/json"},
    ):
        assert client.post("/webhooks/stripe", content=body, headers=headers).status_code == 401
    assert (
        client.post("/webhooks/stripe", content=b"[]", headers=stripe_headers(b"[]")).status_code
        == 400
    )
    assert count(client, WebhookEvent) == 0


def test_admins_list_and_replay_failed_events(client: TestClient) -> None:
    admin = bearer(create_user(client, "root@example.com", is_admin=True))
    member = bearer(create_user(client, "member@example.com"))
    post_stripe(client, stripe_event("checkout.session.completed", {"no": "id"}))
    post_sendgrid(client, [sendgrid_event("open", "x@example.com")])
    wait_applied(client)
    assert client.get("/api/v1/admin/webhook-events", headers=member).status_code == 403
    failed = client.get(
        "/api/v1/admin/webhook-events", params={"status": "failed"}, headers=admin
    ).json()
    assert [e["provider"] for e in failed] == ["stripe"]
    assert "data.object" in failed[0]["outcome"]
    applied = client.get(
        "/api/v1/admin/webhook-events", params={"provider": "sendgrid"}, headers=admin
    ).json()
    assert (
        client.post(
            f"/api/v1/admin/webhook-events/{applied[0]['id']}/replay", headers=admin
        ).status_code
        == 409
    )
    replayed = client.post(f"/api/v1/admin/webhook-events/{failed[0]['id']}/replay", headers=admin)
    assert replayed.status_code == 200
    assert replayed.json()["status"] == "pending"
    wait_applied(client)
    again = client.get(
        "/api/v1/admin/webhook-events", params={"status": "failed"}, headers=admin
    ).json()
    assert again[0]["attempts"] == 2
    assert (
        client.post("/api/v1/admin/webhook-events/999999/replay", headers=admin).status_code == 404
    )
    assert (
        client.get(
            "/api/v1/admin/webhook-events", params={"status": "nope"}, headers=admin
        ).status_code
        == 422
    )


def test_old_dedupe_records_are_cleaned_up_but_not_before_three_days(client: TestClient) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    post_sendgrid(client, [sendgrid_event("open", f"o{i}@example.com") for i in range(3)])
    wait_applied(client)

    async def age(session: AsyncSession) -> None:
        ids = list(await session.scalars(select(WebhookEvent.id).order_by(WebhookEvent.id)))
        when = {ids[0]: 5, ids[1]: 3}
        for event_id, days in when.items():
            await session.execute(
                update(WebhookEvent)
                .where(WebhookEvent.id == event_id)
                .values(received_at=datetime.now(UTC) - timedelta(days=days))
            )

    db(client, age)
    runtime = client.app.state.runtime  # type: ignore[attr-defined]
    removed = client.portal.call(runtime.inbox.cleanup)  # type: ignore[union-attr]
    assert removed == 1
    assert count(client, WebhookEvent) == 2
    assert runtime.inbox.retention_s >= 3 * 24 * 3600


@pytest.fixture
def lag_metrics(client: TestClient) -> str:
    post_sendgrid(client, [sendgrid_event("delivered", "lag@example.com")])
    wait_applied(client)
    return client.get("/metrics").text


def test_metrics_count_events_and_lag(lag_metrics: str) -> None:
    assert (
        'roleferry_webhook_events_total{outcome="accepted",provider="sendgrid",type="delivered"}'
        in lag_metrics
    )
    assert (
        'roleferry_webhook_events_total{outcome="applied",provider="sendgrid",type="delivered"}'
        in lag_metrics
    )
    assert 'roleferry_webhook_lag_seconds_count{provider="sendgrid"}' in lag_metrics
