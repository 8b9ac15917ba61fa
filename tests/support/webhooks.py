"""Signed webhook deliveries made the way SendGrid and Stripe make them, and a way to read
and write the app's database from a test while the app runs elsewhere."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import stripe
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.providers.sandbox_credentials import (
    SANDBOX_STRIPE_WEBHOOK_SECRET,
    sendgrid_signing_key,
)

T = TypeVar("T")
SANDBOX_SENDGRID_KEY = sendgrid_signing_key(7)


def sendgrid_headers(
    body: bytes,
    key: ec.EllipticCurvePrivateKey = SANDBOX_SENDGRID_KEY,
    timestamp: int | None = None,
) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    signature = key.sign(stamp.encode() + body, ec.ECDSA(hashes.SHA256()))
    return {
        "content-type": "application/json",
        "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
        "X-Twilio-Email-Event-Webhook-Timestamp": stamp,
    }


def stripe_headers(
    body: bytes, secret: str = SANDBOX_STRIPE_WEBHOOK_SECRET, timestamp: int | None = None
) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return {"content-type": "application/json", "Stripe-Signature": header}


def sendgrid_event(event: str, email: str, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "timestamp": int(time.time()),
        "event": event,
        "sg_event_id": base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("="),
        "sg_message_id": extra.pop("sg_message_id", "msg0.filter0.0.0"),
        **extra,
    }


def stripe_event(kind: str, obj: dict[str, Any], event_id: str | None = None) -> dict[str, Any]:
    return {
        "id": event_id or f"evt_test_{secrets.token_hex(8)}",
        "object": "event",
        "created": int(time.time()),
        "type": kind,
        "data": {"object": obj},
    }


def dumps(value: Any) -> bytes:
    return json.dumps(value).encode()


def in_db(database_url: str, fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """Runs `fn` in a session of its own, committed, from a test's thread."""

    async def go() -> T:
        database = Database(database_url)
        try:
            async with database.session() as session:
                result = await fn(session)
                await session.commit()
                return result
        finally:
            await database.dispose()

    return asyncio.run(go())
