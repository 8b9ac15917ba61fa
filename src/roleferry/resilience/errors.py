"""What a call under a policy can end in, as far as resilience knows: the base every provider
error extends, the attempt that got no answer in time, and the policy's own refusals (open,
spent, no time left), which send no request and so are neither a success nor a failure of the
provider."""

from __future__ import annotations


class CallError(Exception):
    """A call failed. `retryable`: another attempt may succeed; `counts_as_failure`: it says
    the provider is unhealthy (the breaker counts it); `throttled`: the provider asked us to
    slow down (the budget takes the pause it named in `retry_after`)."""

    retryable = False
    counts_as_failure = False
    throttled = False
    kind = "error"

    def __init__(self, provider: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{provider}: {message}")
        self.provider = provider
        self.message = message
        self.status = status
        self.retry_after: float | None = None


class Timeout(CallError):
    """No answer within the attempt's time."""

    retryable = True
    counts_as_failure = True
    kind = "timeout"


class Refusal(CallError):
    """Our own policy said no before sending anything: never recorded on the breaker."""


class CircuitOpen(Refusal):
    kind = "circuit_open"

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(provider, f"circuit open, next probe in {retry_in:.1f}s")
        self.retry_in = retry_in


class BudgetExhausted(Refusal):
    kind = "budget_exhausted"

    def __init__(self, provider: str, retry_in: float) -> None:
        super().__init__(provider, f"rate budget spent, room again in {retry_in:.1f}s")
        self.retry_in = retry_in


class DeadlineExceeded(Refusal):
    kind = "deadline_exceeded"
