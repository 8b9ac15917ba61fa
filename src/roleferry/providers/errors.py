"""Provider failures, mapped once at the boundary (`map_error`, from each provider's spec) so
no status code leaks upward.

    ProviderError (= resilience's CallError)
    ├── AuthFailed          the key is wrong or lacks rights (not retried)
    ├── InvalidRequest      we sent something the provider refuses (not retried)
    ├── PaymentDeclined     a payment was refused, e.g. a declined card (not retried)
    ├── QuotaExhausted      the plan's quota or spend limit is spent for the period (not retried)
    ├── RateLimited         too many requests now; `retry_after` seconds if the provider said
    ├── Unavailable         5xx, refused or reset connections
    │   └── Overloaded      the provider says it is overloaded (not retried: fall through)
    ├── Timeout             no answer within the attempt's time
    ├── BadResponse         an answer we cannot read (invalid JSON, wrong shape)
    └── Refusal             our own policy said no, nothing was sent (from resilience):
        ├── CircuitOpen, BudgetExhausted, DeadlineExceeded

Messages never carry a key: they name the provider, the endpoint and what went wrong.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx

from roleferry.providers.spec import Reply
from roleferry.resilience.errors import (
    BudgetExhausted,
    CallError,
    CircuitOpen,
    DeadlineExceeded,
    Refusal,
    Timeout,
)

if TYPE_CHECKING:
    from roleferry.providers.spec import ProviderSpec, Quirk

ProviderError = CallError

__all__ = [
    "AuthFailed",
    "BadResponse",
    "BudgetExhausted",
    "CircuitOpen",
    "DeadlineExceeded",
    "IdempotencyConflict",
    "InvalidRequest",
    "Overloaded",
    "PaymentDeclined",
    "ProviderError",
    "QuotaExhausted",
    "RateLimited",
    "Refusal",
    "Timeout",
    "Unavailable",
    "map_error",
]


class AuthFailed(ProviderError):
    kind = "auth_failed"


class InvalidRequest(ProviderError):
    kind = "invalid_request"


class IdempotencyConflict(InvalidRequest):
    """The idempotency key was first used with other parameters: another request, refused."""

    kind = "idempotency_conflict"


class PaymentDeclined(ProviderError):
    kind = "payment_declined"


class QuotaExhausted(ProviderError):
    kind = "quota_exhausted"


class RateLimited(ProviderError):
    retryable = True
    throttled = True
    kind = "rate_limited"

    def __init__(
        self,
        provider: str,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
    ) -> None:
        super().__init__(provider, message, status=status)
        self.retry_after = retry_after


class Unavailable(ProviderError):
    retryable = True
    counts_as_failure = True
    kind = "unavailable"


class Overloaded(Unavailable):
    """Retrying an overloaded provider adds to its load; the next provider is tried instead."""

    retryable = False
    kind = "overloaded"


class BadResponse(ProviderError):
    retryable = True
    counts_as_failure = True
    kind = "bad_response"


def _default(status: int) -> type[ProviderError]:
    """What a status means when no quirk of the provider says otherwise."""
    if status in (401, 403):
        return AuthFailed
    if status == 402:
        return PaymentDeclined
    if status == 408:
        return Timeout
    if status == 429:
        return RateLimited
    if status >= 500:
        return Unavailable
    if 400 <= status < 500:
        return InvalidRequest
    return BadResponse


def reply_of(response: httpx.Response) -> Reply:
    try:
        body = response.json()
    except (ValueError, json.JSONDecodeError):
        body = response.text[:2000]
    return Reply(response.status_code, response.headers, body)


def _build(
    spec: ProviderSpec, cls: type[ProviderError], reply: Reply, endpoint: str
) -> ProviderError:
    """The error, its message naming the endpoint, status and the provider's error type and
    code (identifiers only: a body's free text may echo a key)."""
    named = "/".join(x for x in (reply.error_type(), reply.error_code()) if x)
    message = f"{endpoint} answered {reply.status}" + (f" ({named})" if named else "")
    if cls is RateLimited:
        return RateLimited(
            spec.name, message, retry_after=spec.limits.wait_s(reply.headers), status=reply.status
        )
    error = cls(spec.name, message, status=reply.status)
    if cls is QuotaExhausted or cls is Overloaded:
        error.retry_after = spec.limits.wait_s(reply.headers)
    return error


def _first(quirks: tuple[Quirk, ...], reply: Reply) -> type[ProviderError] | None:
    return next((q.error for q in quirks if q.matches_reply(reply)), None)


def map_error(
    spec: ProviderSpec, failure: httpx.Response | Reply | BaseException, endpoint: str
) -> ProviderError:
    """The one mapping from what a provider answered (or what its client raised) to our error
    tree: the spec's quirks first, in order, then the common meaning of the status."""
    if isinstance(failure, CallError):
        return failure
    if isinstance(failure, BaseException):
        for quirk in spec.quirks:
            if quirk.matches_exception(failure):
                return quirk.error(spec.name, f"{endpoint}: {type(failure).__name__}")
        reply = spec.unwrap(failure) if spec.unwrap else None
        if reply is None:
            if isinstance(failure, httpx.TimeoutException):
                return Timeout(spec.name, f"{endpoint} timed out")
            return Unavailable(spec.name, f"{endpoint}: {type(failure).__name__}")
    elif isinstance(failure, httpx.Response):
        reply = reply_of(failure)
    else:
        reply = failure
    return _build(spec, _first(spec.quirks, reply) or _default(reply.status), reply, endpoint)
