"""Stripe through its official SDK, under our policy: `max_network_retries=0` (only the policy
retries), async calls over httpx, an Idempotency-Key on every POST so a retried payment is not
charged twice, and the SDK's errors mapped by the spec's quirks (card_error → PaymentDeclined).
The SDK is imported and built on first use, so start-up does not pay for it."""

from __future__ import annotations

import uuid
from typing import Any

from roleferry.providers.errors import map_error
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

CHECKOUT = "/v1/checkout/sessions"
PAYMENT_INTENTS = "/v1/payment_intents"
EVENTS = "/v1/events"


class StripeClient:
    def __init__(self, http: ProviderHTTP, policy: Policy) -> None:
        self.spec = http.spec
        self.name = http.spec.name
        self.policy = policy
        self.http = http
        self._http_client: Any = None
        self._sdk: Any = None

    def sdk(self) -> Any:
        if self._sdk is None:
            import stripe

            self._http_client = stripe.HTTPXClient()
            self._sdk = stripe.StripeClient(
                self.http.key,
                base_addresses={"api": self.http.base_url},
                max_network_retries=0,
                http_client=self._http_client,
            )
        return self._sdk

    async def _post(
        self,
        endpoint: str,
        create: Any,
        params: dict[str, Any],
        idempotency_key: str | None,
        deadline: Deadline,
    ) -> Any:
        import stripe

        options = {"idempotency_key": idempotency_key or str(uuid.uuid4())}

        async def attempt(_timeout: float) -> Any:
            try:
                return await create(params=params, options=options)
            except stripe.StripeError as exc:
                raise map_error(self.spec, exc, endpoint) from exc

        return await self.policy.call(
            endpoint, attempt, deadline=deadline, priority=Priority.INTERACTIVE
        )

    async def _get(self, endpoint: str, retrieve: Any, deadline: Deadline) -> Any:
        """A read: safe to repeat, so the policy's retries need no key."""
        import stripe

        async def attempt(_timeout: float) -> Any:
            try:
                return await retrieve()
            except stripe.StripeError as exc:
                raise map_error(self.spec, exc, endpoint) from exc

        return await self.policy.call(
            endpoint, attempt, deadline=deadline, priority=Priority.INTERACTIVE
        )

    async def retrieve_checkout_session(
        self, session_id: str, *, deadline: Deadline, expand: list[str] | None = None
    ) -> Any:
        sessions = self.sdk().v1.checkout.sessions
        return await self._get(
            CHECKOUT + "/{id}",
            lambda: sessions.retrieve_async(session_id, params={"expand": expand or []}),
            deadline,
        )

    async def list_events(self, params: dict[str, Any], *, deadline: Deadline) -> Any:
        """One page of events (`delivery_success`, `types`, `starting_after`, `limit`)."""
        events = self.sdk().v1.events
        return await self._get(EVENTS, lambda: events.list_async(params=params), deadline)

    async def create_checkout_session(
        self, params: dict[str, Any], *, deadline: Deadline, idempotency_key: str | None = None
    ) -> Any:
        return await self._post(
            CHECKOUT,
            self.sdk().v1.checkout.sessions.create_async,
            params,
            idempotency_key,
            deadline,
        )

    async def create_payment_intent(
        self, params: dict[str, Any], *, deadline: Deadline, idempotency_key: str | None = None
    ) -> Any:
        return await self._post(
            PAYMENT_INTENTS,
            self.sdk().v1.payment_intents.create_async,
            params,
            idempotency_key,
            deadline,
        )

    async def aclose(self) -> None:
        if self._http_client is not None:
            await self._http_client.close_async()
