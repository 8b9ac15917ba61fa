"""SendGrid v3: mail send and the suppression lists."""

from __future__ import annotations

from roleferry.providers.errors import InvalidRequest
from roleferry.providers.spec import Auth, Capability, Endpoint, LimitHeaders, ProviderSpec, Quirk

SPEC = ProviderSpec(
    name="sendgrid",
    title="SendGrid",
    capabilities=frozenset({Capability.EMAIL_SENDER}),
    auth=Auth("Authorization", "Bearer"),
    live_url="https://api.sendgrid.com",
    sandbox_key="SG.sandbox-sendgrid.sandbox-key",
    rate_limit="600/60",
    limits=LimitHeaders(
        limit="X-RateLimit-Limit",
        remaining="X-RateLimit-Remaining",
        reset="X-RateLimit-Reset",
        reset_format="unix",
        retry_after=None,
        note="429 `too many requests` when spent; the reset is a unix time, not seconds.",
    ),
    endpoints=(
        Endpoint("POST", "/v3/mail/send", "send one message (202: queued, not delivered)"),
        Endpoint("GET", "/v3/suppression/bounces", "addresses that bounced"),
        Endpoint("GET", "/v3/suppression/spam_reports", "addresses that reported spam"),
        Endpoint("GET", "/v3/suppression/unsubscribes", "addresses that unsubscribed"),
    ),
    quirks=(Quirk(InvalidRequest, "a body over SendGrid's size limit", status=413),),
    client="roleferry.providers.sendgrid.client:SendGridClient",
    follows_provider=(
        "`/v3/mail/send` answers 202: queued, not delivered; delivery is known from events.",
        "mail/send has no idempotency key: a retry after a lost 202 may send twice.",
        "Its 429 carries `X-RateLimit-Reset` (unix time), read as the wait, not `Retry-After`.",
    ),
)
