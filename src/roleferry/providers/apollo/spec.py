"""Apollo.io: people search, then bulk_match to reveal work emails."""

from __future__ import annotations

from roleferry.providers.errors import AuthFailed
from roleferry.providers.spec import Auth, Capability, Endpoint, LimitHeaders, ProviderSpec, Quirk

SPEC = ProviderSpec(
    name="apollo",
    title="Apollo.io",
    capabilities=frozenset({Capability.PEOPLE_FINDER, Capability.EMAIL_FINDER}),
    auth=Auth("x-api-key"),
    live_url="https://api.apollo.io",
    sandbox_key="sandbox-apollo-key",
    rate_limit="100/3600",
    limits=LimitHeaders(
        limit="x-rate-limit-{window}",
        remaining="x-{window}-requests-left",
        windows={"minute": 60.0, "hourly": 3600.0, "daily": 86400.0},
        note="Fixed windows per team and endpoint; every window must have room.",
    ),
    endpoints=(
        Endpoint("POST", "/api/v1/mixed_people/api_search", "people at a domain (no emails)"),
        Endpoint("POST", "/api/v1/people/bulk_match", "reveal up to 10 people's emails"),
    ),
    quirks=(
        Quirk(
            AuthFailed,
            "the plan or a non-master key cannot use this endpoint",
            status=403,
            text="API_INACCESSIBLE",
        ),
    ),
    client="roleferry.providers.apollo.client:ApolloClient",
    placeholder_emails=("email_not_unlocked@domain.com",),
    follows_provider=(
        "The key goes in the `x-api-key` header, not in the JSON body as older examples show.",
        "There is no `/email_finder`: emails come from `people/bulk_match` (10 per call).",
        "`100/3600` is only our default budget (the docs' example header); the "
        "`x-*-requests-left` headers pull our count down to what Apollo says.",
        "A locked email comes back as `email_not_unlocked@…`: read as no email.",
    ),
)
