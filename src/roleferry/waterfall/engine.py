"""The waterfall engine: a batch of contacts (or people searches) in, one decision each out.
No database: the search service and bulk enrichment persist what it decides.

Providers are asked in order (Apollo → Clay → Hunter by default), each for every contact of the
batch still without a sufficient email, in the batches the provider allows. A provider whose
breaker is open or whose budget is spent is skipped at once for the next one; one that fails is
skipped too. What the contact ends with:

- `Found`: a verified or likely email; the walk stopped there.
- `NotFound`: every provider that could help answered without one.
- `RetryAt`: a provider that could still help was skipped. In bulk, a provider whose budget
  refills within `max_wait_s` is waited for (the caller sleeps until `at`); one that does not,
  or whose breaker is open, is given up for this contact. A failure is retried (`transient`,
  the caller's backoff). With nothing answered at all, `at` is when the first provider frees.

Interactive batches (search) share one deadline, each provider getting the time left minus a
reserve for those after it, and hedge: when the provider being tried has not answered by its
own p95, the next one starts beside it and the first useful answer wins.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from roleferry.providers.base import EmailFinder, PeopleFinder
from roleferry.providers.errors import (
    AuthFailed,
    BudgetExhausted,
    CircuitOpen,
    InvalidRequest,
    ProviderError,
    QuotaExhausted,
)
from roleferry.providers.models import Contact, PersonQuery
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy
from roleferry.resilience.ratelimit import Priority
from roleferry.waterfall.decisions import (
    Attempt,
    Decision,
    Found,
    NotFound,
    PeopleFound,
    RetryAt,
    SearchDecision,
    rank,
    sufficient,
)

if TYPE_CHECKING:
    from roleferry.config import Settings
    from roleferry.providers.registry import Providers

RESERVE_PER_PROVIDER_S = 0.75
MIN_PROVIDER_S = 0.2
BULK_CALL_S = 30.0
TRANSIENT_RETRY_S = 5.0
DEFINITIVE = (AuthFailed, QuotaExhausted, InvalidRequest)
"""Errors that answer for this contact: asking again would not change them."""
GIVEN_UP = "~"
"""Marks a provider given up for a contact in `done` (it stayed unavailable too long)."""

R = TypeVar("R")


@dataclass(frozen=True)
class WaitPolicy:
    """How long a contact may wait for an unavailable provider before going on without it.
    0 (interactive): never wait."""

    max_wait_s: float = 0.0


@dataclass
class PeopleQuery:
    """People with these titles at a company."""

    domain: str
    titles: list[str]
    limit: int


@dataclass
class _Item(Generic[R]):
    """One contact's walk through the providers."""

    done: set[str]
    attempts: list[Attempt] = field(default_factory=list)
    refused: dict[str, ProviderError] = field(default_factory=dict)
    failed: dict[str, ProviderError] = field(default_factory=dict)
    skipped: set[str] = field(default_factory=set)
    waits: bool = False
    """Waits for a refused provider that frees soon: asks none after it in this run."""

    def wants(self, name: str) -> bool:
        return (
            not self.satisfied
            and not self.waits
            and name not in self.done
            and GIVEN_UP + name not in self.done
            and name not in self.skipped
        )

    @property
    def satisfied(self) -> bool:
        raise NotImplementedError

    def absorb(self, name: str, result: R) -> None:
        raise NotImplementedError

    @staticmethod
    def useful(result: R) -> bool:
        raise NotImplementedError

    @staticmethod
    def count(result: R) -> int:
        raise NotImplementedError


@dataclass
class _Email(_Item[Contact | None]):
    query: PersonQuery = field(
        default_factory=lambda: PersonQuery(first_name="", last_name="", domain="")
    )
    best: Contact | None = None

    @property
    def satisfied(self) -> bool:
        return sufficient(self.best)

    def absorb(self, name: str, result: Contact | None) -> None:
        if result is not None and result.email and rank(result) > rank(self.best):
            if self.best is not None:
                result.merge(self.best)
            self.best = result

    @staticmethod
    def useful(result: Contact | None) -> bool:
        return result is not None and bool(result.email)

    @staticmethod
    def count(result: Contact | None) -> int:
        return int(result is not None and bool(result.email))


@dataclass
class _People(_Item[list[Contact]]):
    query: PeopleQuery = field(default_factory=lambda: PeopleQuery("", [], 0))
    merger: Merger = field(default_factory=lambda: Merger(0))
    provider: str | None = None

    @property
    def satisfied(self) -> bool:
        return self.merger.sufficient

    def absorb(self, name: str, result: list[Contact]) -> None:
        self.merger.add(result)
        if result and self.provider is None:
            self.provider = name

    @staticmethod
    def useful(result: list[Contact]) -> bool:
        return bool(result)

    @staticmethod
    def count(result: list[Contact]) -> int:
        return len(result)


class Merger:
    """Dedupes people across providers (by name, and LinkedIn profile) and fills each one's
    missing fields."""

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
        return bool(self.contacts) and all(sufficient(c) for c in self.contacts)


def _linkedin_key(url: str | None) -> str | None:
    if not url:
        return None
    return "in:" + url.rstrip("/").rsplit("/", 1)[-1].lower()


Ask = Callable[[str, list[Any], Deadline], Awaitable[list[Any]]]


class Waterfall:
    def __init__(
        self,
        order: Sequence[str],
        people_finders: dict[str, PeopleFinder],
        email_finders: dict[str, EmailFinder],
        policies: dict[str, Policy],
        *,
        no_hedge: Collection[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.order = list(order)
        self.people_finders = people_finders
        self.email_finders = email_finders
        self.policies = policies
        self.no_hedge = set(no_hedge)
        self.clock = clock

    @classmethod
    def of(cls, providers: Providers, settings: Settings) -> Waterfall:
        """The configured waterfall over this process's providers."""
        return cls(
            settings.waterfall,
            providers.people_finders,
            providers.email_finders,
            providers.policies,
            no_hedge=settings.no_hedge,
        )

    async def enrich(
        self,
        queries: Sequence[PersonQuery],
        *,
        priority: Priority,
        deadline: Deadline | None = None,
        wait: WaitPolicy = WaitPolicy(),
        done: Sequence[set[str]] | None = None,
    ) -> list[Decision]:
        """Each person's work email. `done[i]`: providers that already answered for person i
        (in an earlier run), not asked again; updated in place with this run's, and with
        `~name` for a provider given up because it stayed unavailable too long."""
        items = [_Email(done=done[i] if done else set(), query=q) for i, q in enumerate(queries)]

        async def ask(name: str, batch: list[Any], slot: Deadline) -> list[Any]:
            finder = self.email_finders[name]
            return await finder.find_emails(
                [i.query for i in batch], deadline=slot, priority=priority
            )

        await self._walk(items, "find_emails", ask, priority, deadline, wait)
        return [self._decide_email(item, priority, wait) for item in items]

    async def search(
        self,
        queries: Sequence[PeopleQuery],
        *,
        priority: Priority,
        deadline: Deadline | None = None,
    ) -> list[SearchDecision]:
        """People at each company, merged across providers until every one found has a
        sufficient email."""
        items = [_People(done=set(), query=q, merger=Merger(q.limit)) for q in queries]

        async def ask(name: str, batch: list[Any], slot: Deadline) -> list[Any]:
            (item,) = batch
            q = item.query
            finder = self.people_finders[name]
            return [
                await finder.search_people(
                    q.domain, q.titles, q.limit, deadline=slot, priority=priority
                )
            ]

        await self._walk(items, "search_people", ask, priority, deadline, WaitPolicy())
        decisions: list[SearchDecision] = []
        for item in items:
            answered = any(a.outcome in ("ok", "empty") for a in item.attempts)
            if not answered:
                decisions.append(self._retry(item, transient=True))
                continue
            decisions.append(
                PeopleFound(
                    item.merger.contacts, item.provider, item.attempts, self._degraded(item)
                )
            )
        return decisions

    async def _walk(
        self,
        items: Sequence[_Item[Any]],
        operation: str,
        ask: Ask,
        priority: Priority,
        deadline: Deadline | None,
        wait: WaitPolicy,
    ) -> None:
        """Every provider in order, for the items that still want it. In bulk, a provider
        refused for no longer than `wait.max_wait_s` is waited for (the items ask no later one
        now, so they get the same answers as when nothing is refused); one refused for longer
        is passed over at once."""
        hedging = priority is Priority.INTERACTIVE and len(items) == 1
        hedged: set[str] = set()  # asked beside a slow one already: not asked again
        for index, name in enumerate(self.order):
            asking = [i for i in items if i.wants(name) and name not in hedged]
            if not asking:
                continue
            refusal = await self.policies[name].availability(priority)
            if refusal is not None:
                self._refused(asking, name, refusal, priority, wait)
                continue
            slot = self._slot(index, deadline)
            if slot is None:
                for item in asking:
                    item.skipped.add(name)
                    item.attempts.append(Attempt(name, "skipped_deadline", 0.0))
                continue
            if (
                hedging
                and name not in self.no_hedge
                and await self._rival(index, asking[0], deadline, set()) is not None
            ):
                hedged |= await self._hedged(asking[0], operation, ask, index, slot, deadline)
                continue
            size = 1 if operation == "search_people" else self.email_finders[name].batch_size
            for start in range(0, len(asking), size):
                batch = asking[start : start + size]
                refusal = await self._ask(batch, operation, ask, name, slot)
                if refusal is not None:
                    self._refused(asking[start:], name, refusal, priority, wait)
                    break

    @staticmethod
    def _refused(
        items: Sequence[_Item[Any]],
        name: str,
        refusal: ProviderError,
        priority: Priority,
        wait: WaitPolicy,
    ) -> None:
        waits = _waits_for(refusal, priority, wait)
        for item in items:
            item.refused[name] = refusal
            item.waits = item.waits or waits
            item.attempts.append(
                Attempt(name, f"skipped_{refusal.kind}", 0.0, detail=refusal.message)
            )

    def _slot(self, index: int, deadline: Deadline | None) -> Deadline | None:
        """This provider's time: the deadline's remainder less a reserve for those after it;
        in bulk (no deadline) each call's own."""
        if deadline is None:
            return Deadline(BULK_CALL_S)
        after = len(self.order) - index - 1
        budget = deadline.remaining() - RESERVE_PER_PROVIDER_S * after
        if budget < MIN_PROVIDER_S:
            budget = deadline.remaining() if after == 0 else 0.0
        return Deadline(budget) if budget >= MIN_PROVIDER_S else None

    async def _ask(
        self,
        batch: list[_Item[Any]],
        operation: str,
        ask: Ask,
        name: str,
        slot: Deadline,
    ) -> ProviderError | None:
        """One call for a batch; the refusal, when the provider refused it (then its other
        batches are not sent)."""
        started = time.perf_counter()
        try:
            results = await ask(name, batch, slot)
        except (CircuitOpen, BudgetExhausted) as refusal:
            return refusal
        except ProviderError as error:
            self._failed(batch, name, error, started)
            return None
        self.policies[name].observe_answer(operation, time.perf_counter() - started)
        for item, result in zip(batch, results, strict=True):
            self._answered(item, name, result, started)
        return None

    def _answered(self, item: _Item[Any], name: str, result: Any, started: float) -> None:
        item.done.add(name)
        found = item.count(result)
        item.attempts.append(Attempt(name, "ok" if found else "empty", _ms(started), found))
        item.absorb(name, result)

    def _failed(
        self, batch: Sequence[_Item[Any]], name: str, error: ProviderError, started: float
    ) -> None:
        for item in batch:
            item.attempts.append(Attempt(name, error.kind, _ms(started), detail=error.message))
            if isinstance(error, DEFINITIVE):
                item.done.add(name)
            else:
                item.failed[name] = error

    async def _rival(
        self, index: int, item: _Item[Any], deadline: Deadline | None, busy: set[str]
    ) -> tuple[str, Deadline] | None:
        """The provider to start beside a slow one: the next one after `index` the item
        wants and is not already asking, available, with budget room beyond what interactive
        calls keep for themselves (a hedge is a speculative call)."""
        for later in range(index + 1, len(self.order)):
            name = self.order[later]
            if not item.wants(name) or name in busy:
                continue
            policy = self.policies[name]
            if await policy.availability(Priority.INTERACTIVE) is not None:
                return None
            if await policy.limiter.remaining(Priority.BULK) <= 0:
                return None
            slot = self._slot(later, deadline)
            return (name, slot) if slot is not None else None
        return None

    async def _hedged(
        self,
        item: _Item[Any],
        operation: str,
        ask: Ask,
        index: int,
        first_slot: Deadline,
        deadline: Deadline | None,
    ) -> set[str]:
        """The provider at `index` alone until its p95; then the next one beside it, and
        whenever a rival answers without anything useful, the one after that. The first useful
        answer wins and the calls still out are cancelled (they counted against their
        budgets). Returns the providers asked."""

        async def one(name: str, slot: Deadline) -> tuple[str, Any, float]:
            started = time.perf_counter()
            try:
                (result,) = await ask(name, [item], slot)
            except ProviderError as error:
                return name, error, started
            self.policies[name].observe_answer(operation, time.perf_counter() - started)
            return name, result, started

        first = self.order[index]
        mark = len(item.attempts)
        leader = asyncio.create_task(one(first, first_slot))
        names = {leader: first}
        finished, _ = await asyncio.wait(
            {leader}, timeout=self.policies[first].hedge_after_s(operation)
        )
        started_at = time.perf_counter()
        pending = set(names)
        winner = False
        while pending and not winner:
            if not finished:
                rival = await self._rival(index, item, deadline, set(names.values()))
                if rival is not None:
                    task = asyncio.create_task(one(*rival))
                    names[task] = rival[0]
                    pending.add(task)
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                name, result, started = task.result()
                if isinstance(result, CircuitOpen | BudgetExhausted):
                    item.refused[name] = result
                    item.attempts.append(
                        Attempt(name, f"skipped_{result.kind}", 0.0, detail=result.message)
                    )
                elif isinstance(result, ProviderError):
                    self._failed([item], name, result, started)
                else:
                    self._answered(item, name, result, started)
                    winner = winner or item.useful(result)
            finished = set() if leader in pending else finished
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError):
                await task
            item.skipped.add(names[task])
            item.attempts.append(
                Attempt(
                    names[task],
                    "cancelled_hedge",
                    _ms(started_at),
                    detail="slower than its usual time; another provider answered first",
                )
            )
        item.attempts[mark:] = sorted(
            item.attempts[mark:], key=lambda a: self.order.index(a.provider)
        )
        return set(names.values())

    def _degraded(self, item: _Item[Any]) -> bool:
        """A provider that might have helped was refused, failed, cut short or cancelled."""
        return bool(item.refused or item.failed or item.skipped)

    def _decide_email(self, item: _Email, priority: Priority, wait: WaitPolicy) -> Decision:
        if item.satisfied:
            assert item.best is not None
            return Found(item.best, item.attempts, self._degraded(item))
        now = self.clock()
        waiting = {
            name: error for name, error in item.refused.items() if _waits_for(error, priority, wait)
        }
        if waiting:
            name, refusal = min(waiting.items(), key=lambda kv: _retry_in(kv[1]))
            return RetryAt(
                now + _retry_in(refusal),
                name,
                f"waiting for {name}: {refusal.message}",
                item.attempts,
                best=item.best,
            )
        if item.failed and priority is Priority.BULK:
            name, failure = next(iter(item.failed.items()))
            return RetryAt(
                now + TRANSIENT_RETRY_S,
                name,
                f"{name}: {failure.kind}",
                item.attempts,
                transient=True,
                best=item.best,
            )
        answered = any(a.outcome in ("ok", "empty") for a in item.attempts) or bool(item.done)
        if not answered:
            return self._retry(item, transient=bool(item.failed))
        for name in item.refused:
            item.done.add(GIVEN_UP + name)
        reason = "no provider knows this person"
        if item.best is not None:
            guess = item.best
            reason += f"; only a low-confidence guess: {guess.email} ({guess.email_confidence})"
        unavailable = sorted({*item.refused, *item.failed, *item.skipped})
        if unavailable:
            reason += f" (not asked: {', '.join(unavailable)} unavailable)"
        return NotFound(item.attempts, item.best, self._degraded(item), reason)

    def _retry(self, item: _Item[Any], *, transient: bool) -> RetryAt:
        """Nothing answered: the earliest moment a provider that could help frees."""
        now = self.clock()
        if item.refused and not item.failed:
            name, error = min(item.refused.items(), key=lambda kv: _retry_in(kv[1]))
            return RetryAt(now + _retry_in(error), name, error.message, item.attempts)
        name = next(iter({**item.failed, **item.refused}), self.order[0])
        return RetryAt(
            now + TRANSIENT_RETRY_S, name, "every provider failed", item.attempts, transient=True
        )


def _waits_for(refusal: ProviderError, priority: Priority, wait: WaitPolicy) -> bool:
    """Bulk waits for a spent budget that refills within `max_wait_s`; never for an open
    breaker (a failing provider may stay so) nor in interactive work."""
    return (
        priority is Priority.BULK
        and isinstance(refusal, BudgetExhausted)
        and refusal.retry_in <= wait.max_wait_s
    )


def _retry_in(error: ProviderError) -> float:
    return float(getattr(error, "retry_in", TRANSIENT_RETRY_S))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
