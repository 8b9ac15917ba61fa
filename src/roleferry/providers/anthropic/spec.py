"""Anthropic Messages API, through the official SDK with its retries off."""

from __future__ import annotations

from roleferry.providers.errors import (
    InvalidRequest,
    Overloaded,
    QuotaExhausted,
    Timeout,
    Unavailable,
)
from roleferry.providers.spec import (
    Auth,
    Capability,
    Endpoint,
    LimitHeaders,
    ProviderSpec,
    Quirk,
    Reply,
)


def unwrap(exc: BaseException) -> Reply | None:
    """The SDK's status errors carry the HTTP answer (a stream's `error` event arrives as one
    with the 200 it came after)."""
    import anthropic

    if isinstance(exc, anthropic.APIStatusError):
        return Reply(exc.status_code, exc.response.headers, exc.body)
    return None


SPEC = ProviderSpec(
    name="anthropic",
    title="Anthropic",
    capabilities=frozenset({Capability.LLM}),
    auth=Auth("x-api-key"),
    live_url="https://api.anthropic.com",
    sandbox_key="sk-ant-sandbox-key",
    rate_limit="50/60",
    limits=LimitHeaders(
        limit="anthropic-ratelimit-{window}-limit",
        remaining="anthropic-ratelimit-{window}-remaining",
        windows={"requests": 60.0},
        reset="anthropic-ratelimit-requests-reset",
        reset_format="rfc3339",
        note="Requests, input and output tokens per minute, per organization and model class.",
    ),
    endpoints=(Endpoint("POST", "/v1/messages", "a message, whole or streamed"),),
    quirks=(
        Quirk(
            QuotaExhausted,
            "the organization's spend limit: never retried",
            text="enforced_spend_limit_reached",
        ),
        Quirk(
            Overloaded,
            "529 (or a stream's error event): Anthropic-wide overload, never retried",
            error_type="overloaded_error",
        ),
        Quirk(InvalidRequest, "too large for the Messages API", error_type="request_too_large"),
        Quirk(Timeout, "the SDK's own timeout", exception="APITimeoutError"),
        Quirk(Unavailable, "connection refused or reset", exception="APIConnectionError"),
    ),
    client="roleferry.providers.anthropic.client:AnthropicClient",
    sdk="anthropic",
    unwrap=unwrap,
    follows_provider=(
        "529 `overloaded_error` is not a 5xx to retry: we fall through, as retries add load.",
        "The SDK retries twice by default: we set `max_retries=0` so only our policy retries.",
        "An error can arrive as an SSE `error` event after HTTP 200; it maps like the status.",
    ),
)
