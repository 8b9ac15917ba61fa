"""The official `stripe` SDK works against the sandbox: sessions, intents, refunds,
idempotency, the hosted page, and events signed as Stripe signs them."""

from __future__ import annotations

import json
from collections import Counter

import httpx
import pytest
import stripe

from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS, SANDBOX_STRIPE_WEBHOOK_SECRET
from roleferry.sandbox.stripe import parse_form
from tests.support.sandbox_server import SandboxServer


def client(sb: SandboxServer, key: str = SANDBOX_API_KEYS["stripe"]) -> stripe.StripeClient:
    return stripe.StripeClient(
        key, base_addresses={"api": sb.base("stripe")}, max_network_retries=0
    )


SESSION = {
    "mode": "payment",
    "line_items": [{"price": "price_credits_100", "quantity": 2}],
    "success_url": "https://app.example.com/paid?cs={CHECKOUT_SESSION_ID}",
    "cancel_url": "https://app.example.com/pricing",
    "client_reference_id": "user_42",
    "metadata": {"plan": "pro"},
}


def events_of(sb: SandboxServer, count: int) -> list[stripe.Event]:
    delivered = sb.wait_for("stripe", count)
    return [
        stripe.Webhook.construct_event(
            body, headers["stripe-signature"], SANDBOX_STRIPE_WEBHOOK_SECRET
        )
        for headers, body in delivered
    ]


def test_create_and_retrieve_a_checkout_session(sb: SandboxServer) -> None:
    sdk = client(sb)
    session = sdk.v1.checkout.sessions.create(params=SESSION)  # type: ignore[arg-type]
    assert session.id.startswith("cs_test_")
    assert session.amount_total == 2000
    assert session.status == "open"
    assert session.payment_status == "unpaid"
    assert session.metadata.to_dict() == {"plan": "pro"}
    assert session.url == f"{sb.base('stripe')}/pay/{session.id}"
    again = sdk.v1.checkout.sessions.retrieve(session.id)
    assert again.id == session.id
    assert again.client_reference_id == "user_42"


def test_idempotent_replay_and_conflicting_reuse(sb: SandboxServer) -> None:
    sdk = client(sb)
    options = {"idempotency_key": "order-42"}
    first = sdk.v1.checkout.sessions.create(params=SESSION, options=options)  # type: ignore[arg-type]
    replay = sdk.v1.checkout.sessions.create(params=SESSION, options=options)  # type: ignore[arg-type]
    assert replay.id == first.id
    assert len(sb.sandbox.stripe.sessions) == 1
    with pytest.raises(stripe.IdempotencyError) as raised:
        sdk.v1.checkout.sessions.create(
            params={**SESSION, "client_reference_id": "user_43"},
            options=options,  # type: ignore[arg-type]
        )
    assert "order-42" in str(raised.value)


def test_errors_have_stripes_shape(sb: SandboxServer) -> None:
    with pytest.raises(stripe.AuthenticationError):
        client(sb, "sk_test_wrong").v1.checkout.sessions.create(params=SESSION)  # type: ignore[arg-type]
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client(sb).v1.checkout.sessions.retrieve("cs_test_nope")
    assert missing.value.http_status == 404
    assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as bad_price:
        client(sb).v1.checkout.sessions.create(
            params={**SESSION, "line_items": [{"price": "price_nope", "quantity": 1}]}  # type: ignore[arg-type]
        )
    assert bad_price.value.param == "line_items[0][price]"
    raw = httpx.post(
        f"{sb.base('stripe')}/v1/checkout/sessions", auth=(SANDBOX_API_KEYS["stripe"], ""), data={}
    )
    assert raw.status_code == 400
    assert raw.json()["error"] == {
        "type": "invalid_request_error",
        "message": "Missing required param: mode.",
        "code": "parameter_missing",
        "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
        "param": "mode",
    }


def test_hosted_page_payment_emits_signed_events(sb: SandboxServer) -> None:
    session = client(sb).v1.checkout.sessions.create(params=SESSION)  # type: ignore[arg-type]
    page = httpx.get(session.url or "")
    assert page.status_code == 200
    assert "4242" in page.text
    paid = httpx.post(session.url or "", data={"card_number": "4242 4242 4242 4242"})
    assert paid.status_code == 303
    assert paid.headers["location"] == f"https://app.example.com/paid?cs={session.id}"
    events = events_of(sb, 3)
    types = sorted(e.type for e in events)
    assert types == ["charge.succeeded", "checkout.session.completed", "payment_intent.succeeded"]
    completed = next(e for e in events if e.type == "checkout.session.completed")
    assert completed.data.object["payment_status"] == "paid"
    assert completed.data.object["client_reference_id"] == "user_42"
    retrieved = client(sb).v1.checkout.sessions.retrieve(session.id)
    assert retrieved.status == "complete"
    intent = client(sb).v1.payment_intents.retrieve(str(retrieved.payment_intent))
    assert intent.status == "succeeded"
    assert intent.amount_received == 2000


def test_declined_card_fails_the_payment(sb: SandboxServer) -> None:
    session = client(sb).v1.checkout.sessions.create(params=SESSION)  # type: ignore[arg-type]
    declined = httpx.post(session.url or "", data={"card_number": "4000000000000002"})
    assert declined.status_code == 402
    assert "declined" in declined.text
    events = {e.type: e for e in events_of(sb, 2)}
    assert set(events) == {"charge.failed", "payment_intent.payment_failed"}
    failed = events["payment_intent.payment_failed"].data.object
    assert failed["last_payment_error"]["code"] == "card_declined"
    charge = events["charge.failed"].data.object
    assert charge["status"] == "failed"
    assert failed["latest_charge"] == failed["last_payment_error"]["charge"] == charge["id"]
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client(sb).v1.refunds.create(params={"charge": charge["id"]})
    assert refused.value.code == "charge_not_refundable"
    assert client(sb).v1.checkout.sessions.retrieve(session.id).status == "open"


def test_payment_intents_and_refunds(sb: SandboxServer) -> None:
    sdk = client(sb)
    intent = sdk.v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_visa",
        }
    )
    assert intent.status == "succeeded"
    refund = sdk.v1.refunds.create(params={"payment_intent": intent.id, "amount": 2000})
    assert refund.status == "succeeded"
    assert refund.amount == 2000
    with pytest.raises(stripe.InvalidRequestError):
        sdk.v1.refunds.create(params={"payment_intent": intent.id, "amount": 4000})
    with pytest.raises(stripe.CardError) as declined:
        sdk.v1.payment_intents.create(
            params={
                "amount": 5000,
                "currency": "usd",
                "confirm": True,
                "payment_method": "pm_card_chargeDeclined",
            }
        )
    assert declined.value.code == "card_declined"
    events = events_of(sb, 6)
    assert "charge.refunded" in {e.type for e in events}
    refunded = next(e for e in events if e.type == "charge.refunded")
    assert refunded.data.object["amount_refunded"] == 2000


def test_failed_deliveries_are_retried_and_duplicates_keep_their_id(sb: SandboxServer) -> None:
    sb.sandbox.stripe_sender.base_backoff_s = 0.05
    sb.caught.answers.extend([500, 503])
    sb.control("stripe", duplicate_rate=1.0)
    client(sb).v1.payment_intents.create(
        params={
            "amount": 5000,
            "currency": "usd",
            "confirm": True,
            "payment_method": "pm_card_visa",
        }
    )
    delivered = sb.wait_for("stripe", 6)
    ids = [json.loads(body)["id"] for _, body in delivered]
    assert len(set(ids)) == 2
    assert sb.stats()["webhooks"]["stripe"]["failed_attempts"] == 2
    sb.sandbox.stripe_sender.base_backoff_s = 1.0


def test_form_parsing_nests_like_stripe() -> None:
    assert parse_form(
        [
            ("line_items[0][price]", "p"),
            ("line_items[0][quantity]", "2"),
            ("line_items[1][price_data][currency]", "usd"),
            ("metadata[plan]", "pro"),
            ("expand[]", "x"),
        ]
    ) == {
        "line_items": [{"price": "p", "quantity": "2"}, {"price_data": {"currency": "usd"}}],
        "metadata": {"plan": "pro"},
        "expand": ["x"],
    }


def test_sdk_lists_events_and_expands_related_objects(sb: SandboxServer) -> None:
    """The SDK's list, auto-paging, retrieve and expand calls work on the new routes: events
    filtered by type, a session's line items, a charge with its refunds expanded."""
    sdk = client(sb)
    session = sdk.v1.checkout.sessions.create(
        params={**SESSION, "expand": ["line_items"]}  # type: ignore[typeddict-item]
    )
    assert session.line_items is not None
    assert [item.quantity for item in session.line_items.data] == [2]
    items = sdk.v1.checkout.sessions.line_items.list(session.id)
    assert items.data[0].price is not None
    assert items.data[0].price.id == "price_credits_100"
    for amount in (5000, 6000, 7000):
        sdk.v1.payment_intents.create(
            params={
                "amount": amount,
                "currency": "usd",
                "confirm": True,
                "payment_method": "pm_card_visa",
            }
        )
    sb.wait_for("stripe", 6)
    succeeded = sdk.v1.events.list(params={"type": "payment_intent.*", "limit": 2})
    assert succeeded.has_more is True
    paged = list(succeeded.auto_paging_iter())
    assert [e.type for e in paged] == ["payment_intent.succeeded"] * 3
    intent = paged[0].data.object
    charge_id = str(intent["latest_charge"])
    sdk.v1.refunds.create(params={"charge": charge_id, "amount": 1000})
    charge = sdk.v1.charges.retrieve(charge_id, params={"expand": ["refunds"]})
    assert charge.amount_refunded == 1000
    assert charge.refunds is not None
    assert [r.amount for r in charge.refunds.data] == [1000]
    assert charge.payment_method_details is not None
    assert charge.payment_method_details.card is not None
    assert charge.payment_method_details.card.last4 == "4242"


def test_connected_account_objects_and_events_stay_in_their_account(sb: SandboxServer) -> None:
    """A request with `stripe_account` acts for that connected account: its events name the
    account in `account` and `context` (the platform's carry neither), and its objects and
    events are missing for the platform and for other accounts, as in Stripe."""
    sb.control("stripe", duplicate_rate=0.0)
    sdk = client(sb)
    connected = {"stripe_account": "acct_1Sandbox"}
    pay = {"amount": 5000, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"}
    intent = sdk.v1.payment_intents.create(params=pay, options=connected)  # type: ignore[arg-type]
    refund = sdk.v1.refunds.create(params={"payment_intent": intent.id}, options=connected)
    own = sdk.v1.payment_intents.create(params=pay)  # type: ignore[arg-type]
    delivered = events_of(sb, 6)
    by_account = Counter(getattr(e, "account", None) for e in delivered)
    assert by_account == {"acct_1Sandbox": 4, None: 2}
    for event in delivered:
        assert getattr(event, "context", None) == getattr(event, "account", None)
    listed = sdk.v1.events.list(options={"stripe_context": "acct_1Sandbox"})
    assert {e.type for e in listed.data} == {
        "payment_intent.succeeded",
        "charge.succeeded",
        "refund.created",
        "charge.refunded",
    }
    assert all(e.account == "acct_1Sandbox" for e in listed.data)
    platform = sdk.v1.events.list()
    assert [e.data.object["id"] for e in platform.data] == [own.latest_charge, own.id]
    assert "account" not in platform.data[0]
    assert sdk.v1.refunds.retrieve(refund.id, options=connected).charge == intent.latest_charge
    for lookup in (
        lambda: sdk.v1.payment_intents.retrieve(intent.id),
        lambda: sdk.v1.refunds.retrieve(refund.id, options={"stripe_account": "acct_other"}),
        lambda: sdk.v1.charges.retrieve(str(own.latest_charge), options=connected),
        lambda: sdk.v1.events.retrieve(listed.data[0].id),
        lambda: sdk.v1.refunds.create(params={"payment_intent": intent.id}),
    ):
        with pytest.raises(stripe.InvalidRequestError) as missing:
            lookup()
        assert missing.value.code == "resource_missing"
    with pytest.raises(stripe.PermissionError) as refused:
        sdk.v1.events.list(options={"stripe_account": "not-an-account"})
    assert refused.value.http_status == 403
    assert refused.value.json_body["error"]["code"] == "account_invalid"  # type: ignore[index]
