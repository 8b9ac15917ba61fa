"""Anthropic through its official SDK, under our policy: the SDK's retries are off
(`max_retries=0`), each attempt gets the policy's timeout, and whatever the SDK raises is mapped
by the spec's quirks (529 → Overloaded, spend limit → QuotaExhausted: neither retried).
The SDK is imported and built on first use: importing it takes seconds, and a process that
never drafts should not start slower."""

from __future__ import annotations

from typing import TYPE_CHECKING

from roleferry.providers.errors import BadResponse, map_error
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

if TYPE_CHECKING:
    import anthropic

MESSAGES = "/v1/messages"


class AnthropicClient:
    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.spec = http.spec
        self.name = http.spec.name
        self.policy = policy
        self.http = http
        self._sdk: anthropic.AsyncAnthropic | None = None

    def sdk(self) -> anthropic.AsyncAnthropic:
        if self._sdk is None:
            import anthropic

            self._sdk = anthropic.AsyncAnthropic(
                api_key=self.http.key, base_url=self.http.base_url, max_retries=0
            )
        return self._sdk

    async def write(
        self,
        prompt: str,
        *,
        model: str,
        max_tokens: int,
        deadline: Deadline,
        priority: Priority = Priority.INTERACTIVE,
    ) -> str:
        """The model's text for one user prompt."""

        import anthropic

        sdk = self.sdk()

        async def attempt(timeout: float) -> str:
            try:
                message = await sdk.messages.create(
                    model=model,
                    max_tokens=max_tokens,
                    messages=[{"role": "user", "content": prompt}],
                    timeout=timeout,
                )
            except anthropic.AnthropicError as exc:
                raise map_error(self.spec, exc, MESSAGES) from exc
            text = "".join(b.text for b in message.content if b.type == "text")
            if not text:
                raise BadResponse(self.name, f"{MESSAGES} answered no text")
            return text

        return await self.policy.call(MESSAGES, attempt, deadline=deadline, priority=priority)

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
