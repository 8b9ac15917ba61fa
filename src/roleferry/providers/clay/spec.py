"""Clay: the Public API's people search, by domain or by name."""

from __future__ import annotations

from roleferry.providers.spec import Auth, Capability, Endpoint, LimitHeaders, ProviderSpec

SPEC = ProviderSpec(
    name="clay",
    title="Clay",
    capabilities=frozenset({Capability.PEOPLE_FINDER, Capability.EMAIL_FINDER}),
    auth=Auth("clay-api-key"),
    live_url="https://api.clay.com/public/v0",
    sandbox_key="sandbox-clay-key",
    rate_limit="10/1",
    limits=LimitHeaders(note="No limit headers documented; a 429 names its Retry-After."),
    endpoints=(Endpoint("POST", "/search/filters-mode", "people by domain, titles or name"),),
    client="roleferry.providers.clay.client:ClayClient",
    follows_provider=(
        "Clay publishes no people-search schema: this contract is our adapter's, "
        "and the sandbox is its reference.",
    ),
)
