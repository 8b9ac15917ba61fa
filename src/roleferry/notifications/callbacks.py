"""Callbacks to the user's own URL when a job is done, signed per the Standard Webhooks spec
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`, the key being the base64 part of the user's `whsec_` secret).

A callback URL is a way into our network if left unchecked: it goes through the outbound
address guard (`roleferry.outbound`) when the job is created and again before each delivery
(the name may point elsewhere by then), and the delivery connects to the address that was
checked. Loopback is allowed only with `ROLEFERRY_CALLBACK_ALLOW_LOOPBACK` (the development
default), other non-public networks only as listed in `ROLEFERRY_CALLBACK_ALLOWED_NETWORKS`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from typing import TYPE_CHECKING, Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry import outbound
from roleferry.api.times import iso_z
from roleferry.config import Settings
from roleferry.db import insert_for
from roleferry.notifications.models import CallbackSecret
from roleferry.users.models import utcnow

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

log = structlog.get_logger(__name__)
TIMEOUT_S = 15.0


UnsafeCallback = outbound.UnsafeURL


def policy(settings: Settings) -> outbound.AddressPolicy:
    """The addresses callbacks may reach, as configured."""
    return outbound.AddressPolicy.of(
        bool(settings.callback_allow_loopback), settings.callback_allowed_networks
    )


async def check_url(runtime: Runtime, url: str) -> outbound.Target:
    """The checked address to deliver url to; raises UnsafeCallback saying why not."""
    return await outbound.resolve(url, policy(runtime.settings), runtime.resolver, "callback_url")


async def secret_for(session: AsyncSession, user_id: str) -> str:
    """The user's callback secret, made on first use. Two requests (or processes) making it
    at once both get the one that was stored: INSERT ... ON CONFLICT DO NOTHING, then read."""
    existing = await session.get(CallbackSecret, user_id)
    if existing is not None:
        return existing.secret
    fresh = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    await session.execute(
        insert_for(session, CallbackSecret)
        .values(user_id=user_id, secret=fresh, created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["user_id"])
    )
    stored = await session.scalar(
        select(CallbackSecret.secret).where(CallbackSecret.user_id == user_id)
    )
    assert stored is not None
    return stored


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def deliver(runtime: Runtime, job_id: str, summary: dict[str, Any]) -> None:
    """Posts the summary; raises on failure so that the durable step retries it."""
    url = str(summary["callback_url"])
    try:
        target = await check_url(runtime, url)
    except UnsafeCallback as exc:
        log.warning("callback_refused", job_id=job_id, reason=str(exc))
        return
    async with runtime.db.write_session() as session:
        from roleferry.enrichment.models import EnrichmentJob

        job = await session.get(EnrichmentJob, job_id)
        assert job is not None
        secret = await secret_for(session, job.user_id)
    data = {k: v for k, v in summary.items() if k != "callback_url"}
    body = json.dumps(
        {"type": "enrichment_job.finished", "timestamp": iso_z(time.time()), "data": data}
    ).encode()
    message_id = f"msg_{job_id}"
    stamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "webhook-id": message_id,
        "webhook-timestamp": str(stamp),
        "webhook-signature": sign(secret, message_id, stamp, body),
        "user-agent": "RoleFerry-Callbacks/1",
    }
    response = await outbound.post(target, body, headers, TIMEOUT_S)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"callback for {job_id} answered {response.status_code}")
