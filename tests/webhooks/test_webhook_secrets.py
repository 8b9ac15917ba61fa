"""Which credentials verify webhooks: the sandbox's public ones only for a provider that is itself
in sandbox mode; a live provider without its own secret has every delivery refused, and
production does not start without them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from fastapi.testclient import TestClient
from pydantic import ValidationError

from roleferry.config import Provider
from roleferry.providers.sandbox_credentials import SANDBOX_STRIPE_WEBHOOK_SECRET, public_key_b64
from tests.conftest import bearer, create_user, make_settings, start_client
from tests.support.webhooks import (
    sendgrid_event,
    sendgrid_headers,
    stripe_event,
    stripe_headers,
)

LIVE_KEYS = {f"{p.value}_api_key": f"live-key-{p.value}-123456" for p in Provider}
CHECKOUT = stripe_event(
    "checkout.session.completed",
    {
        "id": "cs_forged",
        "object": "checkout.session",
        "payment_status": "paid",
        "amount_total": 100,
        "metadata": {"user_id": "usr_x", "credits": "1000000"},
    },
)
UNSUBSCRIBE = [sendgrid_event("unsubscribe", "victim@example.com")]


def stored_events(client: TestClient) -> list[dict[str, Any]]:
    """Every event the inbox stored, through the admin API."""
    state = client.app.state  # type: ignore[attr-defined]
    if not hasattr(state, "test_admin_key"):
        state.test_admin_key = create_user(client, "admin@example.com", is_admin=True)
    events = client.get("/api/v1/admin/webhook-events", headers=bearer(state.test_admin_key))
    assert events.status_code == 200
    result: list[dict[str, Any]] = events.json()
    return result


def post_stripe(client: TestClient, secret: str = SANDBOX_STRIPE_WEBHOOK_SECRET) -> Any:
    body = json.dumps(CHECKOUT).encode()
    return client.post("/webhooks/stripe", content=body, headers=stripe_headers(body, secret))


def post_sendgrid(client: TestClient, key: ec.EllipticCurvePrivateKey | None = None) -> Any:
    body = json.dumps(UNSUBSCRIBE).encode()
    headers = sendgrid_headers(body) if key is None else sendgrid_headers(body, key)
    return client.post("/webhooks/sendgrid", content=body, headers=headers)


def test_live_stripe_without_its_secret_refuses_events_signed_with_the_sandbox_secret(
    tmp_path: Path,
) -> None:
    """Stripe live, no webhook secret: a forged checkout is refused, nothing stored."""
    with start_client(make_settings(tmp_path, stripe_api_key="sk_live_abcdef123456")) as client:
        refused = post_stripe(client)
        assert refused.status_code == 503
        error = refused.json()["error"]
        assert error["code"] == "webhook_not_configured"
        assert "ROLEFERRY_STRIPE_WEBHOOK_SECRET" in error["message"]
        # SendGrid is still in sandbox mode: its sandbox-signed events are still accepted.
        assert post_sendgrid(client).status_code == 200
        assert [e["provider"] for e in stored_events(client)] == ["sendgrid"]


def test_live_sendgrid_without_its_key_refuses_events_signed_with_the_sandbox_key(
    tmp_path: Path,
) -> None:
    """SendGrid live, no verification key: a forged unsubscribe is refused, nothing stored."""
    with start_client(make_settings(tmp_path, sendgrid_api_key="SG.live-key.abcdefgh")) as client:
        refused = post_sendgrid(client)
        assert refused.status_code == 503
        assert "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY" in refused.json()["error"]["message"]
        assert post_stripe(client).status_code == 200
        assert [e["provider"] for e in stored_events(client)] == ["stripe"]


def test_live_with_secrets_refuses_a_forgery_signed_with_the_public_test_credentials(
    tmp_path: Path,
) -> None:
    """Both live with real secrets: the sandbox's secrets verify nothing; the real ones do."""
    real_key = ec.generate_private_key(ec.SECP256R1())
    settings = make_settings(
        tmp_path,
        stripe_api_key="sk_live_abcdef123456",
        stripe_webhook_secret="whsec_realsecretvalue",
        sendgrid_api_key="SG.live-key.abcdefgh",
        sendgrid_webhook_public_key=public_key_b64(real_key),
    )
    with start_client(settings) as client:
        forged_stripe = post_stripe(client)
        assert forged_stripe.status_code == 401
        assert forged_stripe.json()["error"]["code"] == "invalid_signature"
        assert post_sendgrid(client).status_code == 401
        assert stored_events(client) == []
        assert post_stripe(client, "whsec_realsecretvalue").status_code == 200
        assert post_sendgrid(client, real_key).status_code == 200
        assert len(stored_events(client)) == 2


def test_sandbox_mode_still_verifies_with_the_sandbox_credentials(tmp_path: Path) -> None:
    """No keys: the simulators' signatures verify, and a wrong secret still does not."""
    with start_client(make_settings(tmp_path)) as client:
        assert post_stripe(client).status_code == 200
        assert post_sendgrid(client).status_code == 200
        assert post_stripe(client, "whsec_someoneelse").status_code == 401
        assert len(stored_events(client)) == 2


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ({"stripe_webhook_secret": "whsec_real123456"}, "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY"),
        ({"sendgrid_webhook_public_key": "MFkw"}, "ROLEFERRY_STRIPE_WEBHOOK_SECRET"),
        ({}, "ROLEFERRY_STRIPE_WEBHOOK_SECRET"),
    ],
)
def test_production_refuses_to_start_without_webhook_secrets(
    tmp_path: Path, missing: dict[str, str], named: str
) -> None:
    """ROLEFERRY_ENV=production with every key but a webhook secret missing is refused."""
    with pytest.raises(ValidationError, match=named):
        make_settings(tmp_path, env="production", **LIVE_KEYS, **missing)


def test_a_live_provider_cannot_be_given_the_sandbox_secret(tmp_path: Path) -> None:
    """Setting the public test secret explicitly for a live Stripe is refused at start-up."""
    with pytest.raises(ValidationError, match="public test secret"):
        make_settings(
            tmp_path,
            stripe_api_key="sk_live_abcdef123456",
            stripe_webhook_secret=SANDBOX_STRIPE_WEBHOOK_SECRET,
        )


def test_production_refuses_the_sandbox(tmp_path: Path) -> None:
    """ROLEFERRY_SANDBOX_ENABLED=true in production is refused, with what to do."""
    secrets = {"stripe_webhook_secret": "whsec_r1234567", "sendgrid_webhook_public_key": "MFkw"}
    production = make_settings(tmp_path, env="production", **LIVE_KEYS, **secrets)
    assert production.sandbox_mounted is False
    with pytest.raises(ValidationError, match="ROLEFERRY_SANDBOX_ENABLED"):
        make_settings(tmp_path, env="production", sandbox_enabled=True, **LIVE_KEYS, **secrets)


def test_roleferry_serve_in_production_says_which_secret_is_missing(
    env: dict[str, str], tmp_path: Path
) -> None:
    """The command exits 2 with the setting's name instead of serving forged-webhook bait."""
    env = {
        **env,
        "ROLEFERRY_ENV": "production",
        **{f"ROLEFERRY_{k.upper()}": v for k, v in LIVE_KEYS.items()},
        "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY": "MFkw",
    }
    run = subprocess.run(
        [sys.executable, "-m", "roleferry", "serve", "--port", "1"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "ROLEFERRY_STRIPE_WEBHOOK_SECRET" in run.stderr


def test_development_warns_at_start_when_a_live_provider_has_no_webhook_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Development starts, and says loudly which webhooks will be refused."""
    from roleferry.logging import configure_logging

    configure_logging("INFO", "console")
    try:
        with start_client(make_settings(tmp_path, stripe_api_key="sk_live_abcdef123456")):
            pass
    finally:
        configure_logging("WARNING", "console")
    said = capsys.readouterr().err
    assert "webhook_secret_missing" in said
    assert "ROLEFERRY_STRIPE_WEBHOOK_SECRET" in said
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" not in said
