"""Provider failures, mapped once at each client's boundary so no status code leaks upward.

    ProviderError
    ├── AuthFailed          the key is wrong or lacks rights (not retried)
    ├── InvalidRequest      we sent something the provider refuses (not retried)
    ├── QuotaExhausted      the plan's quota is spent for the period (not retried)
    ├── RateLimited         too many requests now; `retry_after` seconds if the provider said
    ├── Unavailable         5xx, 529, refused or reset connections
    ├── Timeout             no answer within the attempt's time
    ├── BadResponse         an answer we cannot read (invalid JSON, wrong shape)
    ├── CircuitOpen         our breaker refuses calls for now (no request sent)
    ├── BudgetExhausted     our rate limiter has no room now (no request sent)
    └── DeadlineExceeded    the caller's time ran out before an answer

Messages never carry a key: they name the provider, the endpoint and what went wrong.
"""

from __future__ import annotations


class ProviderError(Exception):
    retryable = False
    counts_as_failure = False
    kind = "error"

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.status = status


class AuthFailed(ProviderError):
    kind = "auth_failed"


class InvalidRequest(ProviderError):
    kind = "invalid_request"


class QuotaExhausted(ProviderError):
    kind = "quota_exhausted"


class RateLimited(ProviderError):
    retryable = True
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


class Timeout(ProviderError):
    retryable = True
    counts_as_failure = True
    kind = "timeout"


class BadResponse(ProviderError):
    retryable = True
    counts_as_failure = True
    kind = "bad_response"


class CircuitOpen(ProviderError):
    kind = "circuit_open"

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(provider, f"circuit open, next probe in {retry_in:.1f}s")
        self.retry_in = retry_in


class BudgetExhausted(ProviderError):
    kind = "budget_exhausted"

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(provider, f"rate budget spent, room again in {retry_in:.1f}s")
        self.retry_in = retry_in


class DeadlineExceeded(ProviderError):
    kind = "deadline_exceeded"
