"""Signatures checked the way each provider really signs, against the official helpers."""

from __future__ import annotations

import base64
import time

import pytest
import stripe
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from sendgrid.helpers.eventwebhook import EventWebhook

from roleferry.webhooks.signatures import (
    InvalidWebhook,
    StaleTimestamp,
    verify_sendgrid,
    verify_stripe,
)
from tests.support.webhooks import sendgrid_headers, stripe_headers

BODY = b'[{"email":"a@b.io","event":"delivered","sg_event_id":"e1","timestamp":1}]'


def public_b64(key: ec.EllipticCurvePrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


@pytest.fixture
def key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def check_sendgrid(
    body: bytes, headers: dict[str, str], public: str, tolerance: float = 600
) -> None:
    verify_sendgrid(
        body,
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
        public,
        tolerance,
    )


def test_sendgrid_signature_matches_the_official_helper(key: ec.EllipticCurvePrivateKey) -> None:
    headers = sendgrid_headers(BODY, key)
    check_sendgrid(BODY, headers, public_b64(key))
    helper = EventWebhook()
    assert helper.verify_signature(
        BODY.decode(),
        headers["X-Twilio-Email-Event-Webhook-Signature"],
        headers["X-Twilio-Email-Event-Webhook-Timestamp"],
        helper.convert_public_key_to_ecdsa(public_b64(key)),
    )


def test_sendgrid_rejects_tampering_wrong_keys_and_bad_headers(
    key: ec.EllipticCurvePrivateKey,
) -> None:
    headers = sendgrid_headers(BODY, key)
    with pytest.raises(InvalidWebhook):
        check_sendgrid(BODY.replace(b"delivered", b"bounce"), headers, public_b64(key))
    with pytest.raises(InvalidWebhook):
        check_sendgrid(BODY, headers, public_b64(ec.generate_private_key(ec.SECP256R1())))
    with pytest.raises(InvalidWebhook):
        check_sendgrid(
            BODY, {**headers, "X-Twilio-Email-Event-Webhook-Signature": "%%%"}, public_b64(key)
        )
    with pytest.raises(InvalidWebhook):
        verify_sendgrid(
            BODY, None, headers["X-Twilio-Email-Event-Webhook-Timestamp"], public_b64(key), 600
        )
    stamp = int(headers["X-Twilio-Email-Event-Webhook-Timestamp"]) + 1
    with pytest.raises(InvalidWebhook):
        check_sendgrid(
            BODY, {**headers, "X-Twilio-Email-Event-Webhook-Timestamp": str(stamp)}, public_b64(key)
        )


@pytest.mark.parametrize("offset", [-660, 660])
def test_sendgrid_rejects_stale_and_future_timestamps(
    key: ec.EllipticCurvePrivateKey, offset: int
) -> None:
    headers = sendgrid_headers(BODY, key, timestamp=int(time.time()) + offset)
    with pytest.raises(StaleTimestamp):
        check_sendgrid(BODY, headers, public_b64(key))
    check_sendgrid(BODY, headers, public_b64(key), tolerance=700)


def test_stripe_signature_matches_construct_event() -> None:
    body = b'{"id": "evt_1", "object": "event", "type": "charge.refunded", "data": {"object": {}}}'
    headers = stripe_headers(body, "whsec_one")
    verify_stripe(body, headers["Stripe-Signature"], ["whsec_one"], 300)
    event = stripe.Webhook.construct_event(body.decode(), headers["Stripe-Signature"], "whsec_one")
    assert event.id == "evt_1"
    with pytest.raises(InvalidWebhook):
        verify_stripe(body + b" ", headers["Stripe-Signature"], ["whsec_one"], 300)
    with pytest.raises(InvalidWebhook):
        verify_stripe(body, headers["Stripe-Signature"], ["whsec_two"], 300)
    for bad in ("", "t=abc,v1=00", "v1=00", "t=1"):
        with pytest.raises(InvalidWebhook):
            verify_stripe(body, bad, ["whsec_one"], 300)


def test_stripe_rotation_accepts_any_secret_and_any_v1() -> None:
    body = b'{"id": "evt_2", "type": "x"}'
    now = int(time.time())
    old = stripe_headers(body, "whsec_old", now)["Stripe-Signature"]
    new = stripe_headers(body, "whsec_new", now)["Stripe-Signature"]
    both = f"{old},{new.split(',')[1]}"
    verify_stripe(body, both, ["whsec_new"], 300)
    verify_stripe(body, both, ["whsec_old"], 300)
    verify_stripe(body, old, ["whsec_new", "whsec_old"], 300)


@pytest.mark.parametrize("offset", [-400, 400])
def test_stripe_rejects_stale_and_future_timestamps(offset: int) -> None:
    body = b'{"id": "evt_3", "type": "x"}'
    headers = stripe_headers(body, "whsec_one", int(time.time()) + offset)
    with pytest.raises(StaleTimestamp):
        verify_stripe(body, headers["Stripe-Signature"], ["whsec_one"], 300)
