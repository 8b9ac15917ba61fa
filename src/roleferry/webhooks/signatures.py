"""Signature checks, on the raw body bytes, before anything parses them.

SendGrid signs its Event Webhook with ECDSA P-256: SHA-256 over the timestamp header's bytes
followed by the raw body, the signature base64 DER in X-Twilio-Email-Event-Webhook-Signature,
verified with the public key SendGrid shows (base64 DER). The design document's HMAC recipe is
not how SendGrid signs. Stripe signs with HMAC-SHA256 of "t.body" under each endpoint secret,
several `v1=` during a secret's rotation. Both reject timestamps outside a tolerance, in the
past or the future, so a captured request cannot be replayed later.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from collections.abc import Callable
from functools import lru_cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

SENDGRID_SIGNATURE = "x-twilio-email-event-webhook-signature"
SENDGRID_TIMESTAMP = "x-twilio-email-event-webhook-timestamp"
STRIPE_SIGNATURE = "stripe-signature"


class InvalidWebhook(Exception):
    """Refused before any state changed; `outcome` is the metric label."""

    outcome = "invalid_signature"


class StaleTimestamp(InvalidWebhook):
    outcome = "stale_timestamp"


def _check_time(timestamp: int, tolerance_s: float, now: float) -> None:
    if abs(now - timestamp) > tolerance_s:
        raise StaleTimestamp(
            f"timestamp {timestamp} is {int(now - timestamp)} s old (negative: in the future), "
            f"outside ±{int(tolerance_s)} s"
        )


@lru_cache(maxsize=8)
def _public_key(public_key_b64: str) -> ec.EllipticCurvePublicKey:
    key = serialization.load_der_public_key(base64.b64decode(public_key_b64))
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise ValueError("the SendGrid webhook key must be an EC public key")
    return key


def verify_sendgrid(
    body: bytes,
    signature: str | None,
    timestamp: str | None,
    public_key_b64: str,
    tolerance_s: float,
    clock: Callable[[], float] = time.time,
) -> None:
    if not signature or not timestamp:
        raise InvalidWebhook("missing SendGrid signature or timestamp header")
    if not timestamp.isdigit():
        raise InvalidWebhook("the timestamp header is not a unix time")
    try:
        der = base64.b64decode(signature, validate=True)
        _public_key(public_key_b64).verify(
            der, timestamp.encode() + body, ec.ECDSA(hashes.SHA256())
        )
    except (InvalidSignature, binascii.Error, ValueError) as exc:
        raise InvalidWebhook("the SendGrid signature does not match this body") from exc
    _check_time(int(timestamp), tolerance_s, clock())


def verify_stripe(
    body: bytes,
    header: str | None,
    secrets: list[str],
    tolerance_s: float,
    clock: Callable[[], float] = time.time,
) -> None:
    if not header:
        raise InvalidWebhook("missing Stripe-Signature header")
    items = [part.split("=", 1) for part in header.split(",") if "=" in part]
    timestamps = [v for k, v in items if k.strip() == "t"]
    signatures = [v.strip() for k, v in items if k.strip() == "v1"]
    if len(timestamps) != 1 or not timestamps[0].strip().isdigit() or not signatures:
        raise InvalidWebhook("Stripe-Signature needs t=<unix time> and at least one v1=")
    timestamp = timestamps[0].strip()
    signed = timestamp.encode() + b"." + body
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    if not any(hmac.compare_digest(e, s) for e in expected for s in signatures):
        raise InvalidWebhook("no Stripe v1 signature matches this body under any configured secret")
    _check_time(int(timestamp), tolerance_s, clock())
