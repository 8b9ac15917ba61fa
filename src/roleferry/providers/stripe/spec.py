"""Stripe: Checkout Sessions and PaymentIntents, through the official SDK with retries off."""

from __future__ import annotations

from roleferry.providers.errors import (
    IdempotencyConflict,
    PaymentDeclined,
    RateLimited,
    Unavailable,
)
from roleferry.providers.spec import (
    Auth,
    Capability,
    Endpoint,
    LimitHeaders,
    ProviderSpec,
    Quirk,
    Reply,
)


def unwrap(exc: BaseException) -> Reply | None:
    """Stripe's errors carry the status, headers and parsed body of the answer."""
    import stripe

    if isinstance(exc, stripe.StripeError) and exc.http_status is not None:
        return Reply(exc.http_status, dict(exc.headers or {}), exc.json_body)
    return None


SPEC = ProviderSpec(
    name="stripe",
    title="Stripe",
    capabilities=frozenset({Capability.PAYMENTS}),
    auth=Auth("Authorization", "Bearer"),
    live_url="https://api.stripe.com",
    sandbox_key="sk_test_sandbox",
    rate_limit="25/1",
    limits=LimitHeaders(note="25 requests/s in test mode, 100 live; no limit headers."),
    endpoints=(
        Endpoint("POST", "/v1/checkout/sessions", "a hosted checkout"),
        Endpoint("POST", "/v1/payment_intents", "a payment, confirmed at once"),
        Endpoint(
            "GET", "/v1/checkout/sessions/{id}", "a checkout's state (success page, reconciliation)"
        ),
        Endpoint("GET", "/v1/events", "events, e.g. those not delivered (reconciliation)"),
    ),
    quirks=(
        Quirk(PaymentDeclined, "a declined card (402): tell the user", error_type="card_error"),
        Quirk(
            IdempotencyConflict,
            "an idempotency key reused with other parameters",
            error_type="idempotency_error",
        ),
        Quirk(RateLimited, "Stripe's rate limiter (`rate_limit`)", status=429),
        Quirk(Unavailable, "Stripe's own failure", error_type="api_error"),
        Quirk(
            Unavailable, "connection refused, reset or timed out", exception="APIConnectionError"
        ),
    ),
    client="roleferry.providers.stripe.client:StripeClient",
    sdk="stripe",
    unwrap=unwrap,
    follows_provider=(
        "Bodies are form-encoded, not JSON; the SDK does it.",
        "The SDK's `max_network_retries` is set to 0 explicitly: only our policy retries.",
        "Every POST carries an Idempotency-Key, so a retried payment is not charged twice.",
    ),
)
