"""Capabilities domain code asks for; providers implement the ones they offer."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from roleferry.providers.models import Contact, PersonQuery
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
