"""SendGrid, Anthropic and Stripe go through the same policy and the same mapping as the
finders: the official SDKs (retries off) and our httpx client talk to the sandbox, and what
the sandbox's faults produce arrives as our typed errors, retried only when it should be."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from roleferry.providers import errors
from roleferry.providers.registry import Providers
from roleferry.resilience.breaker import CircuitState
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.testing import set_testing
from tests.support.providers import providers_for
from tests.support.sandbox_server import SandboxServer

PROMPT = "Write a 3-sentence email to Dana Kowalski at Acme for the Staff Engineer role."


@pytest.fixture
async def providers(sb: SandboxServer, tmp_path: Path) -> AsyncIterator[Providers]:
    built = providers_for(sb, tmp_path, attempt_timeout_s=2.0)
    yield built
    await built.aclose()


def calls(sb: SandboxServer, name: str, endpoint: str) -> dict[str, int]:
    result: dict[str, int] = sb.stats()["providers"][name].get(endpoint, {})
    return result


async def write(providers: Providers) -> str:
    text: str = await providers.clients["anthropic"].write(
        PROMPT, model="claude-sandbox-1", max_tokens=300, deadline=Deadline(5)
    )
    return text


@pytest.fixture(autouse=True)
def _sdks_imported() -> None:
    """The clients import their SDK on first use, which can take seconds on a busy machine:
    done here, so the calls' deadlines measure calls."""
    import anthropic  # noqa: F401
    import stripe  # noqa: F401


async def test_anthropic_writes_through_the_sdk(providers: Providers) -> None:
    assert (await write(providers)).startswith("Hi Dana,")


async def test_anthropic_529_is_overloaded_and_not_retried(
    providers: Providers, sb: SandboxServer
) -> None:
    """The SDK would retry a 529 twice; with its retries off and ours declining, one call."""
    sb.control("anthropic", fail_next=3, error_status=529)
    with pytest.raises(errors.Overloaded) as raised:
        await write(providers)
    assert raised.value.status == 529
    assert calls(sb, "anthropic", "/v1/messages") == {"529": 1}


async def test_anthropic_500_is_retried_by_our_policy_once_per_attempt(
    providers: Providers, sb: SandboxServer
) -> None:
    """A 500 is transient: our policy retries it, the SDK adds nothing."""
    sb.control("anthropic", fail_next=1, error_status=500)
    await write(providers)
    assert calls(sb, "anthropic", "/v1/messages") == {"200": 1, "500": 1}


async def test_anthropic_overloads_count_on_its_breaker(
    providers: Providers, sb: SandboxServer
) -> None:
    sb.control("anthropic", error_rate=1.0, error_status=529)
    for _ in range(5):
        with pytest.raises(errors.Overloaded):
            await write(providers)
    with pytest.raises(errors.CircuitOpen):
        await write(providers)
    assert await providers.policies["anthropic"].breaker.state() is CircuitState.OPEN


async def test_stripe_card_error_is_a_declined_payment(
    providers: Providers, sb: SandboxServer
) -> None:
    """A declined card is the user's to fix: PaymentDeclined, sent once, breaker untouched."""
    with pytest.raises(errors.PaymentDeclined) as raised:
        await providers.clients["stripe"].create_payment_intent(
            {
                "amount": 1000,
                "currency": "usd",
                "confirm": "true",
                "payment_method": "pm_card_chargeDeclined",
            },
            deadline=Deadline(5),
        )
    assert raised.value.status == 402
    assert "card_error" in str(raised.value)
    assert calls(sb, "stripe", "/v1/payment_intents") == {"402": 1}


async def test_stripe_succeeds_and_its_429_is_rate_limited(
    providers: Providers, sb: SandboxServer
) -> None:
    intent: Any = await providers.clients["stripe"].create_payment_intent(
        {"amount": 1000, "currency": "usd", "confirm": "true", "payment_method": "pm_card_visa"},
        deadline=Deadline(5),
    )
    assert intent.status == "succeeded"
    set_testing(True, attempts=1)
    sb.control("stripe", error_rate=1.0, error_status=429)
    with pytest.raises(errors.RateLimited):
        await providers.clients["stripe"].create_checkout_session(
            {"mode": "payment", "line_items": [{"price": "price_credits_100", "quantity": 1}]},
            deadline=Deadline(1),
        )


def mail(to: str) -> dict[str, Any]:
    return {
        "personalizations": [{"to": [{"email": to}]}],
        "from": {"email": "jobs@mail.example.com"},
        "subject": "Quick question",
        "content": [{"type": "text/plain", "value": "Hi there"}],
    }


async def test_sendgrid_sends_and_its_429_waits_until_the_reset(
    providers: Providers, sb: SandboxServer
) -> None:
    """SendGrid's 429 names its reset as a unix time: that becomes the wait. One attempt: a
    reset within the deadline would otherwise be waited for and retried, rightly."""
    set_testing(True, attempts=1)
    sb.control("sendgrid", rate_limit={"limit": 1, "period_s": 3600})
    sendgrid = providers.clients["sendgrid"]
    assert await sendgrid.bounces(deadline=Deadline(3)) == []
    assert await sendgrid.send(mail("a@example.com"), deadline=Deadline(3))
    with pytest.raises(errors.RateLimited) as raised:
        await sendgrid.send(mail("b@example.com"), deadline=Deadline(3))
    assert raised.value.retry_after is not None
    assert 0 < raised.value.retry_after <= 3601
    assert calls(sb, "sendgrid", "/v3/mail/send") == {"202": 1, "429": 1}
