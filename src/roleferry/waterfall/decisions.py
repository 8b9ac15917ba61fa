"""What the waterfall decides for each contact, and the rules it decides by: when an email is
good enough to stop, and which of two emails is better. Defined here once; search and bulk
enrichment both persist these decisions."""

from __future__ import annotations

from dataclasses import dataclass, field

from roleferry.providers.models import Contact

SUFFICIENT = ("verified", "likely")
_RANK = {"verified": 3, "likely": 2, "guessed": 1}


def rank(contact: Contact | None) -> int:
    """How good a contact's email is: verified > likely > guessed > none."""
    if contact is None or not contact.email:
        return 0
    return _RANK.get(contact.email_status or "", 0)


def sufficient(contact: Contact | None) -> bool:
    """An email good enough to stop asking further providers."""
    return contact is not None and bool(contact.email) and contact.email_status in SUFFICIENT


@dataclass(frozen=True)
class Attempt:
    """One provider's part in a decision: `ok`, `empty`, an error kind, `skipped_<why>`, or
    `cancelled_hedge` (a slower call cancelled because another answered first)."""

    provider: str
    outcome: str
    latency_ms: float
    found: int = 0
    detail: str | None = None


@dataclass
class Found:
    """A sufficient email (verified or likely), with where it came from."""

    contact: Contact
    attempts: list[Attempt]
    degraded: bool = False

    @property
    def source(self) -> str | None:
        return self.contact.sources.get("email")

    @property
    def confidence(self) -> int | None:
        return self.contact.email_confidence

    @property
    def verification(self) -> str | None:
        return self.contact.email_status


@dataclass
class NotFound:
    """Every provider that could help answered without a sufficient email. `guess` is the
    best low-confidence email seen, if any; `degraded` says a provider was skipped."""

    attempts: list[Attempt]
    guess: Contact | None = None
    degraded: bool = False
    reason: str = "no provider knows this person"


@dataclass
class RetryAt:
    """No answer yet: ask again at `at` (unix seconds). `provider` is the one waited for;
    `transient` says a provider failed (the caller applies its backoff) rather than refused
    for a known time."""

    at: float
    provider: str
    reason: str
    attempts: list[Attempt]
    transient: bool = False
    best: Contact | None = None


Decision = Found | NotFound | RetryAt


@dataclass
class PeopleFound:
    """A people search's answer: merged, deduped contacts and the first provider that found
    any. `degraded`: a provider that might have found more was skipped or failed."""

    contacts: list[Contact]
    provider: str | None
    attempts: list[Attempt] = field(default_factory=list)
    degraded: bool = False


SearchDecision = PeopleFound | RetryAt
