"""Callbacks to the user's own URL when a job is done, signed per the Standard Webhooks spec
(`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
"id.timestamp.body">`, the key being the base64 part of the user's `whsec_` secret).

A callback URL is a way into our network if left unchecked: its host must resolve only to
public addresses (loopback is allowed when `ROLEFERRY_CALLBACK_ALLOW_LOOPBACK`, the
development default), it is checked when the job is created and again before each delivery
(the name may point elsewhere by then), and redirects are not followed.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx
import structlog
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.api.times import iso_z
from roleferry.notifications.models import CallbackSecret

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

log = structlog.get_logger(__name__)
TIMEOUT_S = 15.0


class UnsafeCallback(ValueError):
    """The URL is not one we will call."""


async def secret_for(session: AsyncSession, user_id: str) -> str:
    row = await session.get(CallbackSecret, user_id)
    if row is None:
        row = CallbackSecret(
            user_id=user_id, secret="whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
        )
        session.add(row)
        await session.flush()
    return row.secret


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


async def check_url(url: str, allow_loopback: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeCallback("callback_url must be an http(s) URL with a host")
    if parts.username or parts.password:
        raise UnsafeCallback("callback_url must not carry credentials")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(
            parts.hostname,
            parts.port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except socket.gaierror as exc:
        raise UnsafeCallback(f"callback_url host {parts.hostname!r} does not resolve") from exc
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if address.is_loopback and allow_loopback:
            continue
        if (
            address.is_private
            or address.is_loopback
            or address.is_link_local
            or address.is_reserved
            or address.is_multicast
            or address.is_unspecified
        ):
            raise UnsafeCallback(
                f"callback_url host {parts.hostname!r} resolves to {address}, a private or local "
                "address; callbacks go only to public addresses"
            )


async def deliver(runtime: Runtime, job_id: str, summary: dict[str, Any]) -> None:
    """Posts the summary; raises on failure so that the durable step retries it."""
    url = str(summary["callback_url"])
    try:
        await check_url(url, bool(runtime.settings.callback_allow_loopback))
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
    async with httpx.AsyncClient(timeout=TIMEOUT_S, follow_redirects=False) as client:
        response = await client.post(url, content=body, headers=headers)
    if not 200 <= response.status_code < 300:
        raise RuntimeError(f"callback for {job_id} answered {response.status_code}")
