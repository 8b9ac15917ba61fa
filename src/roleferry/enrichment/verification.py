"""How far a found address can be trusted, per result:

- `verified`: a provider knows the person and the address (Apollo's or Clay's record, or an
  address Hunter found published on the web or verified itself);
- `pattern`: the address was guessed from the domain's address pattern; `confidence` says how
  sure the provider is;
- `unverified`: an address with no word on how it was obtained.

A job with `verify_patterns` asks an email verifier (Hunter's) about each pattern guess: a
mailbox that exists makes it `verified`, one that does not makes the contact `not_found`.
"""

from __future__ import annotations

from roleferry.enrichment.models import EnrichmentItem
from roleferry.providers.base import EmailVerifier
from roleferry.providers.errors import ProviderError
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.ratelimit import Priority

CALL_DEADLINE_S = 30.0


def of(email_status: str | None) -> str:
    """The verification of an address from the provider's email status."""
    if email_status == "verified":
        return "verified"
    if email_status in ("likely", "guessed"):
        return "pattern"
    return "unverified"


async def verify_patterns(verifier: EmailVerifier, items: list[EnrichmentItem]) -> None:
    """Asks the verifier about every found pattern guess among `items`, and records its
    answer on them. A verifier that fails leaves the guess a `pattern`, with why."""
    for item in items:
        if item.status != "found" or item.verification != "pattern" or not item.email:
            continue
        try:
            answer = await verifier.verify_email(
                item.email, deadline=Deadline(CALL_DEADLINE_S), priority=Priority.BULK
            )
        except ProviderError as exc:
            item.reason = f"guessed from the domain's pattern; not verified ({exc.kind})"
            continue
        item.provider_calls += 1
        if answer == "valid":
            item.verification = "verified"
            item.reason = f"guessed from the domain's pattern, then verified by {verifier.name}"
        elif answer == "invalid":
            item.reason = (
                f"the pattern guess {item.email} does not exist ({verifier.name}'s verifier)"
            )
            item.status = "not_found"
            item.email = None
            item.source = None
            item.confidence = None
            item.email_status = None
            item.verification = None
        else:
            item.reason = (
                f"guessed from the domain's pattern; {verifier.name}'s verifier could not "
                f"confirm it ({answer})"
            )
