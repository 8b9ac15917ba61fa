"""Recent provider call outcomes kept in memory, for the integrations page: p50/p95 latency
and error rate over the last five minutes, per provider."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from roleferry.monitoring.metrics import INTEGRATION_CALLS, INTEGRATION_LATENCY

WINDOW_S = 300.0
MAX_SAMPLES = 10_000


@dataclass(frozen=True)
class Recent:
    calls: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None


class IntegrationStats:
    """Records every attempt in Prometheus and in a five-minute in-memory window."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}

    def observe(
        self, provider: str, endpoint: str, duration_s: float, error_type: str | None
    ) -> None:
        status = "error" if error_type else "success"
        labels = (provider, endpoint, status, error_type or "")
        INTEGRATION_CALLS.labels(*labels).inc()
        INTEGRATION_LATENCY.labels(*labels).observe(duration_s)
        samples = self._samples.setdefault(provider, deque(maxlen=MAX_SAMPLES))
        samples.append((self.clock(), duration_s, error_type is None))

    def recent(self, provider: str) -> Recent:
        cutoff = self.clock() - WINDOW_S
        samples = [s for s in self._samples.get(provider, ()) if s[0] >= cutoff]
        if not samples:
            return Recent(0, None, None, None)
        latencies = sorted(s[1] for s in samples)

        def pct(q: float) -> float:
            return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)

        errors = sum(1 for s in samples if not s[2])
        return Recent(len(samples), round(errors / len(samples), 4), pct(0.5), pct(0.95))
