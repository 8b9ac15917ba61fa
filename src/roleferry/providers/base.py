"""Capabilities domain code asks for; providers implement the ones they offer."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from roleferry.providers.models import Contact, PersonQuery
from roleferry.providers.spec import Capability
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority


@runtime_checkable
class PeopleFinder(Protocol):
    """Finds people with these titles at a company's domain."""

    name: str

    async def search_people(
        self, domain: str, titles: list[str], limit: int, *, deadline: Deadline, priority: Priority
    ) -> list[Contact]: ...


@runtime_checkable
class EmailFinder(Protocol):
    """Finds the work emails of named people; `None` where not found."""

    name: str
    batch_size: int

    async def find_emails(
        self, people: list[PersonQuery], *, deadline: Deadline, priority: Priority
    ) -> list[Contact | None]: ...


@runtime_checkable
class EmailVerifier(Protocol):
    """Checks whether a mailbox exists. Answers one of Hunter's verifier statuses: `valid`,
    `invalid`, `accept_all`, `webmail`, `disposable` or `unknown`."""

    name: str

    async def verify_email(self, email: str, *, deadline: Deadline, priority: Priority) -> str: ...


@runtime_checkable
class EmailSender(Protocol):
    """Queues messages and reports addresses that bounced."""

    name: str

    async def send(
        self, message: dict[str, Any], *, deadline: Deadline, priority: Priority = ...
    ) -> str: ...

    async def bounces(self, *, deadline: Deadline, limit: int = ...) -> list[dict[str, Any]]: ...


@runtime_checkable
class LLM(Protocol):
    """Writes text for a prompt."""

    name: str

    async def write(
        self,
        prompt: str,
        *,
        model: str,
        max_tokens: int,
        deadline: Deadline,
        priority: Priority = ...,
    ) -> str: ...


@runtime_checkable
class Payments(Protocol):
    """Takes payments: hosted checkouts and confirmed payment intents."""

    name: str

    async def create_checkout_session(
        self, params: dict[str, Any], *, deadline: Deadline, idempotency_key: str | None = ...
    ) -> Any: ...

    async def create_payment_intent(
        self, params: dict[str, Any], *, deadline: Deadline, idempotency_key: str | None = ...
    ) -> Any: ...


PROTOCOLS: dict[Capability, type] = {
    Capability.PEOPLE_FINDER: PeopleFinder,
    Capability.EMAIL_FINDER: EmailFinder,
    Capability.EMAIL_VERIFIER: EmailVerifier,
    Capability.EMAIL_SENDER: EmailSender,
    Capability.LLM: LLM,
    Capability.PAYMENTS: Payments,
}
"""What a client of a provider offering each capability implements."""
