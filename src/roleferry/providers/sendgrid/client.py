"""SendGrid v3 over httpx: mail send and the bounce list. Only what the app needs; statuses are
mapped by the spec (a 429's wait comes from `X-RateLimit-Reset`, a unix time)."""

from __future__ import annotations

from typing import Any

from roleferry.providers.errors import BadResponse
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

MAIL_SEND = "/v3/mail/send"
BOUNCES = "/v3/suppression/bounces"


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

    async def bounces(self, *, deadline: Deadline, limit: int = 500) -> list[dict[str, Any]]:
        """Addresses that bounced, newest first."""

        async def attempt(timeout: float) -> list[dict[str, Any]]:
            response = await self.http.request(
                "GET", BOUNCES, params={"limit": limit}, timeout=timeout
            )
            rows = self.http.json(self.http.check(response, BOUNCES), BOUNCES)
            if not isinstance(rows, list):
                raise BadResponse(self.name, f"{BOUNCES} answered a JSON {type(rows).__name__}")
            return rows

        return await self.policy.call(BOUNCES, attempt, deadline=deadline)
