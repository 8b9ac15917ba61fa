"""The fallback waterfall (Apollo → Clay → Hunter by default): which provider to ask, in what
order, and when to stop.

A provider whose breaker is open or whose budget is spent is skipped at once. Each provider
gets the time left minus a reserve for those after it, so a hanging first provider cannot eat
the whole deadline. People are deduped by name (and LinkedIn profile) and merged field by
field; the walk stops at the first sufficient answer: people found, each with an email that
is verified or likely.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from roleferry.providers.base import EmailFinder, PeopleFinder
from roleferry.providers.errors import BudgetExhausted, CircuitOpen, ProviderError
from roleferry.providers.models import Contact, PersonQuery
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority

RESERVE_PER_PROVIDER_S = 0.75
MIN_PROVIDER_S = 0.2
SUFFICIENT = ("verified", "likely")


@dataclass(frozen=True)
class Attempt:
    provider: str
    outcome: str
    latency_ms: float
    found: int = 0
    detail: str | None = None


@dataclass
class Outcome:
    contacts: list[Contact] = field(default_factory=list)
    provider: str | None = None
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def all_failed(self) -> bool:
        """No provider answered at all (every attempt an error or a skip)."""
        return bool(self.attempts) and all(a.outcome not in ("ok", "empty") for a in self.attempts)

    def retry_after_s(self, errors: list[ProviderError]) -> int:
        waits = [e.retry_in for e in errors if isinstance(e, CircuitOpen | BudgetExhausted)]
        return max(1, round(min(waits))) if waits else 5


class Merger:
    """Dedupes people across providers and fills each one's missing fields."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.contacts: list[Contact] = []
        self._by_key: dict[str, Contact] = {}

    def add(self, found: list[Contact]) -> None:
        for contact in found:
            linkedin = _linkedin_key(contact.linkedin_url)
            existing = self._by_key.get(contact.key) or (
                self._by_key.get(linkedin) if linkedin else None
            )
            if existing is not None:
                existing.merge(contact)
            elif len(self.contacts) < self.limit:
                self.contacts.append(contact)
            else:
                continue
            target = existing or contact
            self._by_key[target.key] = target
            if linkedin:
                self._by_key[linkedin] = target

    @property
    def sufficient(self) -> bool:
        return bool(self.contacts) and all(
            c.email and c.email_status in SUFFICIENT for c in self.contacts
        )


def _linkedin_key(url: str | None) -> str | None:
    if not url:
        return None
    return "in:" + url.rstrip("/").rsplit("/", 1)[-1].lower()


class Waterfall:
    def __init__(
        self,
        order: list[str],
        people_finders: dict[str, PeopleFinder],
        email_finders: dict[str, EmailFinder],
        policies: dict[str, Policy],
    ) -> None:
        self.order = order
        self.people_finders = people_finders
        self.email_finders = email_finders
        self.policies = policies

    async def _slot(
        self,
        index: int,
        deadline: Deadline,
        priority: Priority,
        outcome: Outcome,
        errors: list[ProviderError],
    ) -> Deadline | None:
        """The sub-deadline for the provider at `index`, or None (and a recorded skip)."""
        name = self.order[index]
        refusal = await self.policies[name].availability(priority)
        if refusal is not None:
            errors.append(refusal)
            outcome.attempts.append(
                Attempt(name, f"skipped_{refusal.kind}", 0.0, detail=refusal.message)
            )
            return None
        after = len(self.order) - index - 1
        budget = deadline.remaining() - RESERVE_PER_PROVIDER_S * after
        if budget < MIN_PROVIDER_S:
            budget = deadline.remaining() if after == 0 else 0.0
        if budget < MIN_PROVIDER_S:
            outcome.attempts.append(Attempt(name, "skipped_deadline", 0.0))
            return None
        return Deadline(budget)

    async def search(
        self,
        domain: str,
        titles: list[str],
        limit: int,
        *,
        deadline: Deadline,
        priority: Priority = Priority.INTERACTIVE,
    ) -> tuple[Outcome, list[ProviderError]]:
        outcome, merger = Outcome(), Merger(limit)
        errors: list[ProviderError] = []
        for index, name in enumerate(self.order):
            slot = await self._slot(index, deadline, priority, outcome, errors)
            if slot is None:
                continue
            started = time.perf_counter()
            try:
                found = await self.people_finders[name].search_people(
                    domain, titles, limit, deadline=slot, priority=priority
                )
            except ProviderError as error:
                errors.append(error)
                outcome.attempts.append(
                    Attempt(name, error.kind, _ms(started), detail=error.message)
                )
                continue
            outcome.attempts.append(
                Attempt(name, "ok" if found else "empty", _ms(started), len(found))
            )
            merger.add(found)
            if found and outcome.provider is None:
                outcome.provider = name
            if merger.sufficient:
                break
        outcome.contacts = merger.contacts
        return outcome, errors

    async def enrich(
        self, query: PersonQuery, *, deadline: Deadline, priority: Priority = Priority.INTERACTIVE
    ) -> tuple[Outcome, list[ProviderError]]:
        """The person's work email: the first verified or likely one, else the best guess."""
        outcome = Outcome()
        errors: list[ProviderError] = []
        best: Contact | None = None
        for index, name in enumerate(self.order):
            slot = await self._slot(index, deadline, priority, outcome, errors)
            if slot is None:
                continue
            started = time.perf_counter()
            try:
                (found,) = await self.email_finders[name].find_emails(
                    [query], deadline=slot, priority=priority
                )
            except ProviderError as error:
                errors.append(error)
                outcome.attempts.append(
                    Attempt(name, error.kind, _ms(started), detail=error.message)
                )
                continue
            outcome.attempts.append(
                Attempt(name, "ok" if found else "empty", _ms(started), int(bool(found)))
            )
            if found is None:
                continue
            if best is None:
                best = found
                outcome.provider = name
            else:
                best.merge(found)
                if found.email and best.sources.get("email") == name:
                    outcome.provider = name
            if best.email and best.email_status in SUFFICIENT:
                break
        outcome.contacts = [best] if best else []
        return outcome, errors


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
