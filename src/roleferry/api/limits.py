"""Per-user request rate limit on the API (ROLEFERRY_USER_RATE_LIMIT, e.g. `20/1,600/60`):
the same sliding-window budget as the providers', in the same store (Redis when configured,
so every process counts together). Past it: 429 with the true Retry-After."""

from __future__ import annotations

import math

from roleferry.errors import TooManyRequests
from roleferry.resilience.ratelimit import Priority, RateLimiter, Window
from roleferry.resilience.store import StateStore


async def check(store: StateStore, spec: str, user_id: str) -> None:
    """Counts one request for `user_id`, or raises 429 saying when the next one may go."""
    limiter = RateLimiter(f"api:{user_id}", store, Window.parse(spec), bulk_share=1.0)
    grant = await limiter.try_acquire(Priority.INTERACTIVE)
    if not grant.granted:
        retry_after = max(1, math.ceil(grant.wait_s))
        raise TooManyRequests(
            f"too many requests for this API key; try again in {retry_after}s",
            details={"limit": spec, "retry_after_s": retry_after},
            headers={"Retry-After": str(retry_after)},
        )
