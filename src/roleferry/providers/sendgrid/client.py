"""SendGrid v3 over httpx: mail send and the suppression lists. Only what the app needs; statuses
are mapped by the spec (a 429's wait comes from `X-RateLimit-Reset`, a unix time)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from roleferry.providers.errors import BadResponse, Timeout, Unavailable
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

MAIL_SEND = "/v3/mail/send"
BOUNCES = "/v3/suppression/bounces"
SUPPRESSION_LISTS = {
    "bounce": BOUNCES,
    "spam_report": "/v3/suppression/spam_reports",
    "unsubscribe": "/v3/suppression/unsubscribes",
}


class SendOutcomeUnknown(Unavailable):
    """The request may have reached SendGrid (no answer, a reset after sending, a 5xx): it
    may or may not be queued. Never retried here; the caller resolves it from events."""

    retryable = False
    kind = "outcome_unknown"


class SendGridClient:
    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.http = http
        self.name = http.spec.name
        self.policy = policy

    async def send(
        self, message: dict[str, Any], *, deadline: Deadline, priority: Priority = Priority.BULK
    ) -> str:
        """Queues one message; returns SendGrid's X-Message-Id."""

        async def attempt(timeout: float) -> str:
            response = self.http.check(
                await self.http.request("POST", MAIL_SEND, json=message, timeout=timeout),
                MAIL_SEND,
            )
            message_id: str | None = response.headers.get("x-message-id")
            if not message_id:
                raise BadResponse(self.name, f"{MAIL_SEND} answered without X-Message-Id")
            return message_id

        return await self.policy.call(MAIL_SEND, attempt, deadline=deadline, priority=priority)

    async def send_once(
        self, message: dict[str, Any], *, deadline: Deadline, priority: Priority = Priority.BULK
    ) -> str:
        """Like `send`, but an attempt whose outcome is unknown raises SendOutcomeUnknown
        instead of being retried (mail/send has no idempotency key). Only answers that prove
        nothing was queued (connection refused, 4xx, 429) are retried by the policy."""

        async def attempt(timeout: float) -> str:
            try:
                # Inside the policy's own timeout, so a slow answer is ours to classify.
                async with asyncio.timeout(timeout * 0.9):
                    response = await self.http.request(
                        "POST", MAIL_SEND, json=message, timeout=timeout
                    )
            except (TimeoutError, Timeout) as exc:
                raise SendOutcomeUnknown(self.name, f"{MAIL_SEND} did not answer") from exc
            except Unavailable as exc:
                if isinstance(exc.__cause__, httpx.ConnectError):
                    raise
                raise SendOutcomeUnknown(self.name, f"{MAIL_SEND}: {exc.message}") from exc
            if response.status_code >= 500:
                raise SendOutcomeUnknown(self.name, f"{MAIL_SEND} answered {response.status_code}")
            response = self.http.check(response, MAIL_SEND)
            message_id: str | None = response.headers.get("x-message-id")
            if not message_id:
                raise SendOutcomeUnknown(self.name, f"{MAIL_SEND} answered without X-Message-Id")
            return message_id

        return await self.policy.call(MAIL_SEND, attempt, deadline=deadline, priority=priority)

    async def bounces(self, *, deadline: Deadline, limit: int = 500) -> list[dict[str, Any]]:
        """Addresses that bounced, newest first."""
        return await self.suppressions("bounce", deadline=deadline, limit=limit)

    async def suppressions(
        self,
        kind: str,
        *,
        deadline: Deadline,
        limit: int = 500,
        start_time: int = 0,
        offset: int = 0,
    ) -> list[dict[str, Any]]:
        """One suppression list (`SUPPRESSION_LISTS`), newest first, created at or after
        `start_time` (unix s)."""
        path = SUPPRESSION_LISTS[kind]

        async def attempt(timeout: float) -> list[dict[str, Any]]:
            response = await self.http.request(
                "GET",
                path,
                params={"limit": limit, "start_time": start_time, "offset": offset},
                timeout=timeout,
            )
            rows = self.http.json(self.http.check(response, path), path)
            if not isinstance(rows, list):
                raise BadResponse(self.name, f"{path} answered a JSON {type(rows).__name__}")
            return rows

        return await self.policy.call(path, attempt, deadline=deadline)
