"""The specs are the one source: settings, the registry, the sandbox keys, the integrations
view and the metrics labels are derived from them, and `map_error` applies their quirks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
import stripe
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers import errors
from roleferry.providers.base import PROTOCOLS
from roleferry.providers.catalog import SPECS, offering, spec_of
from roleferry.providers.errors import map_error
from roleferry.providers.models import real_email
from roleferry.providers.registry import Providers
from roleferry.providers.sandbox_credentials import SANDBOX_API_KEYS
from roleferry.providers.spec import Capability, ProviderSpec, Reply
from tests.conftest import bearer, create_user, make_settings

NAMES = [spec.name for spec in SPECS]


def test_every_provider_has_a_spec_with_a_client_and_a_simulator() -> None:
    """Six providers, each with a client, capabilities and at least one endpoint."""
    from roleferry.sandbox.control import PROVIDERS

    assert NAMES == ["apollo", "clay", "hunter", "sendgrid", "anthropic", "stripe"]
    assert set(NAMES) == set(PROVIDERS), "each spec has its simulator"
    for spec in SPECS:
        assert spec.client, spec.name
        assert spec.capabilities, spec.name
        assert spec.endpoints, spec.name


@pytest.mark.parametrize("spec", SPECS, ids=NAMES)
def test_settings_come_from_the_spec(
    spec: ProviderSpec, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Key, base URL and budget fields exist per spec, read ROLEFERRY_<NAME>_*, and default to
    the spec's budget, live URL when keyed, and sandbox URL with its test key otherwise."""
    sandboxed = make_settings(tmp_path)
    assert sandboxed.rate_limit(spec.name) == spec.rate_limit
    assert sandboxed.credential(spec.name).get_secret_value() == spec.sandbox_key
    assert sandboxed.base_url(spec.name, "http://h:1") == f"http://h:1/sandbox/{spec.name}"
    prefix = f"ROLEFERRY_{spec.name.upper()}_"
    monkeypatch.setenv(prefix + "API_KEY", "live-key-123456")
    monkeypatch.setenv(prefix + "RATE_LIMIT", "7/60")
    live = make_settings(tmp_path)
    assert live.is_live(spec.name)
    assert live.rate_limit(spec.name) == "7/60"
    assert live.base_url(spec.name, "http://h:1") == spec.live_url
    monkeypatch.setenv(prefix + "RATE_LIMIT", "seven")
    with pytest.raises(ValueError, match=prefix + "RATE_LIMIT"):
        make_settings(tmp_path)


def test_a_new_spec_brings_its_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a provider is adding a spec: its three settings follow from it alone."""
    import dataclasses

    from roleferry.config import Settings, provider_settings

    new = dataclasses.replace(spec("clay"), name="dropcontact", rate_limit="3/1")

    class WithNew(provider_settings((*SPECS, new))):  # type: ignore[misc]
        model_config = Settings.model_config

    monkeypatch.setenv("ROLEFERRY_DROPCONTACT_API_KEY", "dc-key-123456")
    values = WithNew(_env_file=None)
    assert values.dropcontact_api_key.get_secret_value() == "dc-key-123456"  # type: ignore[attr-defined]
    assert values.dropcontact_rate_limit == "3/1"  # type: ignore[attr-defined]
    assert values.dropcontact_base_url is None  # type: ignore[attr-defined]


def test_sandbox_keys_are_the_specs() -> None:
    assert {spec.name: spec.sandbox_key for spec in SPECS} == SANDBOX_API_KEYS


async def test_the_registry_builds_every_spec(tmp_path: Path) -> None:
    """A policy and a client per spec, authenticated as the spec says; finders by capability."""
    built = Providers(make_settings(tmp_path), "http://h:1", IntegrationStats())
    try:
        assert list(built.policies) == NAMES
        assert list(built.clients) == NAMES
        assert list(built.people_finders) == offering(Capability.PEOPLE_FINDER)
        assert list(built.email_finders) == offering(Capability.EMAIL_FINDER)
        assert list(built.offering(Capability.LLM)) == ["anthropic"]
        assert list(built.offering(Capability.PAYMENTS)) == ["stripe"]
        assert list(built.offering(Capability.EMAIL_SENDER)) == ["sendgrid"]
        for name, client in built.clients.items():
            for capability in spec_of(name).capabilities:
                assert isinstance(client, PROTOCOLS[capability]), (name, capability)
        for http in built._http:
            header, value = next(iter(http.spec.auth.headers(http.spec.sandbox_key).items()))
            assert http.client.headers[header] == value
    finally:
        await built.aclose()


def test_metrics_carry_a_label_per_spec(client: TestClient) -> None:
    """The circuit and budget gauges have a series for each provider once the app runs."""
    for spec in SPECS:
        value = REGISTRY.get_sample_value("roleferry_circuit_state", {"provider": spec.name})
        assert value == 0, spec.name


def test_integrations_list_every_spec(client: TestClient) -> None:
    """/api/v1/integrations lists every spec in order with its capabilities; the console's
    integrations page does too (tests/web/test_console_http.py)."""
    key = create_user(client, "ops@example.com")
    rows = client.get("/api/v1/integrations", headers=bearer(key)).json()
    assert [r["provider"] for r in rows] == NAMES
    for row, spec in zip(rows, SPECS, strict=True):
        assert row["capabilities"] == sorted(spec.capabilities)
        assert row["mode"] == "sandbox"


def test_placeholder_emails_are_read_as_none() -> None:
    for spec in SPECS:
        for placeholder in spec.placeholder_emails:
            assert real_email(placeholder) is None, (spec.name, placeholder)


def _reply_for(spec: ProviderSpec, status: int | None, error_type: str | None, text: str | None):
    body: dict[str, Any] = {"error": {"type": error_type or "x", "message": text or "m"}}
    return Reply(status or 400, {}, body)


@pytest.mark.parametrize(
    ("spec", "quirk"),
    [(s, q) for s in SPECS for q in s.quirks if q.exception is None],
    ids=lambda v: getattr(v, "name", None) or getattr(v, "why", "")[:30],
)
def test_each_body_or_status_quirk_maps_to_its_error(spec: ProviderSpec, quirk: Any) -> None:
    """Every row of every quirks table, matched by a reply built from it."""
    reply = _reply_for(spec, quirk.status, quirk.error_type, quirk.text)
    mapped = map_error(spec, reply, "/x")
    assert type(mapped) is quirk.error
    assert mapped.provider == spec.name


def spec(name: str) -> ProviderSpec:
    return next(s for s in SPECS if s.name == name)


@pytest.mark.parametrize(
    ("name", "status", "body", "headers", "expected", "retryable"),
    [
        ("hunter", 403, {"errors": []}, {}, errors.RateLimited, True),
        ("hunter", 429, {"errors": []}, {}, errors.QuotaExhausted, False),
        ("apollo", 403, {"error_code": "API_INACCESSIBLE"}, {}, errors.AuthFailed, False),
        ("apollo", 429, {}, {"retry-after": "12"}, errors.RateLimited, True),
        ("apollo", 503, {}, {}, errors.Unavailable, True),
        ("clay", 422, {}, {}, errors.InvalidRequest, False),
        (
            "anthropic",
            529,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            {},
            errors.Overloaded,
            False,
        ),
        (
            "anthropic",
            429,
            {"error": {"type": "rate_limit_error", "message": "enforced_spend_limit_reached"}},
            {"retry-after": "5"},
            errors.QuotaExhausted,
            False,
        ),
        (
            "anthropic",
            200,
            {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}},
            {},
            errors.Overloaded,
            False,
        ),
        ("stripe", 402, {"error": {"type": "card_error"}}, {}, errors.PaymentDeclined, False),
        (
            "stripe",
            400,
            {"error": {"type": "idempotency_error"}},
            {},
            errors.IdempotencyConflict,
            False,
        ),
        ("sendgrid", 401, {"errors": []}, {}, errors.AuthFailed, False),
    ],
)
def test_known_answers_map_as_the_provider_means_them(
    name: str,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    expected: type[Exception],
    retryable: bool,
) -> None:
    mapped = map_error(spec(name), Reply(status, headers, body), "/x")
    assert type(mapped) is expected
    assert mapped.retryable is retryable
    if expected is errors.RateLimited and "retry-after" in headers:
        assert mapped.retry_after == float(headers["retry-after"])


def test_transport_and_sdk_exceptions_map() -> None:
    request = httpx.Request("POST", "http://h/v1/messages")
    cases: list[tuple[str, BaseException, type[Exception]]] = [
        ("apollo", httpx.ConnectTimeout("t"), errors.Timeout),
        ("apollo", httpx.ConnectError("refused"), errors.Unavailable),
        ("anthropic", anthropic.APITimeoutError(request=request), errors.Timeout),
        ("anthropic", anthropic.APIConnectionError(request=request), errors.Unavailable),
        ("stripe", stripe.APIConnectionError("no route"), errors.Unavailable),
    ]
    for name, exc, expected in cases:
        assert type(map_error(spec(name), exc, "/x")) is expected, (name, exc)


def test_a_message_never_carries_the_body_text() -> None:
    """Stripe echoes part of a wrong key in its message: only type and code are kept."""
    body = {"error": {"type": "invalid_request_error", "message": "Invalid API Key sk_live_abc"}}
    mapped = map_error(spec("stripe"), Reply(401, {}, body), "/v1/payment_intents")
    assert "sk_live" not in str(mapped)
    assert "invalid_request_error" in str(mapped)
