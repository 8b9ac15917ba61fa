"""Recent provider call outcomes kept in memory, for the integrations page: p50/p95 latency
and error rate over the last five minutes, per-minute figures over the last hour (the page's
charts) and the last calls with their outcome, per provider."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from roleferry.monitoring.metrics import INTEGRATION_CALLS, INTEGRATION_LATENCY

WINDOW_S = 300.0
MAX_SAMPLES = 10_000
SERIES_MINUTES = 60
RECENT_CALLS = 20


@dataclass(frozen=True)
class Recent:
    calls: int
    error_rate: float | None
    p50_ms: float | None
    p95_ms: float | None


@dataclass(frozen=True)
class Call:
    at: float  # unix seconds
    endpoint: str
    outcome: str  # "ok" or the error kind
    ms: float


@dataclass(frozen=True)
class Minute:
    """One minute of calls: the chart's point."""

    at: float  # unix seconds at the minute's start
    calls: int
    error_rate: float
    p50_ms: float
    p95_ms: float


def _percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


class IntegrationStats:
    """Records every attempt in Prometheus, in a five-minute in-memory window, in per-minute
    buckets for an hour and in a short list of the last calls."""

    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.clock = clock
        self.wall = wall
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}
        # minute index -> (latencies in seconds, errors), the last SERIES_MINUTES minutes
        self._minutes: dict[str, dict[int, tuple[list[float], int]]] = {}
        self._calls: dict[str, deque[Call]] = {}

    def observe(
        self, provider: str, endpoint: str, duration_s: float, error_type: str | None
    ) -> None:
        status = "error" if error_type else "success"
        labels = (provider, endpoint, status, error_type or "")
        INTEGRATION_CALLS.labels(*labels).inc()
        INTEGRATION_LATENCY.labels(*labels).observe(duration_s)
        samples = self._samples.setdefault(provider, deque(maxlen=MAX_SAMPLES))
        samples.append((self.clock(), duration_s, error_type is None))
        now = self.wall()
        minutes = self._minutes.setdefault(provider, {})
        latencies, errors = minutes.get(int(now // 60), ([], 0))
        latencies.append(duration_s)
        minutes[int(now // 60)] = (latencies, errors + (1 if error_type else 0))
        for old in [m for m in minutes if m <= now // 60 - SERIES_MINUTES]:
            del minutes[old]
        calls = self._calls.setdefault(provider, deque(maxlen=RECENT_CALLS))
        calls.append(Call(now, endpoint, error_type or "ok", round(duration_s * 1000, 1)))

    def series(self, provider: str) -> list[Minute]:
        """Per-minute p50/p95 and error rate over the last hour, oldest first; minutes with
        no call are left out."""
        first = int(self.wall() // 60) - SERIES_MINUTES + 1
        out = []
        for minute, (latencies, errors) in sorted(self._minutes.get(provider, {}).items()):
            if minute < first:
                continue
            ordered = sorted(latencies)
            out.append(
                Minute(
                    at=minute * 60.0,
                    calls=len(ordered),
                    error_rate=round(errors / len(ordered), 4),
                    p50_ms=round(_percentile(ordered, 0.5) * 1000, 1),
                    p95_ms=round(_percentile(ordered, 0.95) * 1000, 1),
                )
            )
        return out

    def last_calls(self, provider: str) -> list[Call]:
        """The most recent calls, newest first."""
        return list(reversed(self._calls.get(provider, ())))

    def recent(self, provider: str) -> Recent:
        cutoff = self.clock() - WINDOW_S
        samples = [s for s in self._samples.get(provider, ()) if s[0] >= cutoff]
        if not samples:
            return Recent(0, None, None, None)
        latencies = sorted(s[1] for s in samples)

        def pct(q: float) -> float:
            return round(_percentile(latencies, q) * 1000, 1)

        errors = sum(1 for s in samples if not s[2])
        return Recent(len(samples), round(errors / len(samples), 4), pct(0.5), pct(0.95))
