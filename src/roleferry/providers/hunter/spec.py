"""Hunter.io: domain search, email finder and verifier; its 403 and 429 mean the opposite of
most APIs."""

from __future__ import annotations

from roleferry.providers.errors import QuotaExhausted, RateLimited
from roleferry.providers.spec import Auth, Capability, Endpoint, LimitHeaders, ProviderSpec, Quirk

SPEC = ProviderSpec(
    name="hunter",
    title="Hunter.io",
    capabilities=frozenset(
        {Capability.PEOPLE_FINDER, Capability.EMAIL_FINDER, Capability.EMAIL_VERIFIER}
    ),
    auth=Auth("X-API-KEY"),
    live_url="https://api.hunter.io",
    sandbox_key="sandbox-hunter-key",
    rate_limit="15/1,500/60",
    limits=LimitHeaders(note="No limit headers; 15 requests/s and 500/min per key."),
    endpoints=(
        Endpoint("GET", "/v2/domain-search", "people and emails at a domain"),
        Endpoint("GET", "/v2/email-finder", "one person's email"),
        Endpoint("GET", "/v2/email-verifier", "whether a mailbox exists"),
    ),
    quirks=(
        Quirk(RateLimited, "403 is Hunter's per-second/minute rate limit: retry later", status=403),
        Quirk(QuotaExhausted, "429 is the monthly plan quota: not retried", status=429),
    ),
    client="roleferry.providers.hunter.client:HunterClient",
    follows_provider=(
        "403 is a rate limit and 429 the monthly quota, the opposite of most APIs.",
        "The key goes in `X-API-KEY`, never in the URL's `api_key` parameter.",
    ),
)
