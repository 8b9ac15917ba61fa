"""The integrations page's charts and recent calls, from the in-memory stats, on a clock the
test controls."""

from __future__ import annotations

from roleferry.monitoring.integrations import RECENT_CALLS, IntegrationStats


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_series_gives_per_minute_percentiles_and_errors_for_the_last_hour() -> None:
    """Each minute's p50/p95 and error rate; minutes older than an hour drop out."""
    wall = Clock(1_000_020.0)  # 20 s into a minute
    stats = IntegrationStats(clock=wall, wall=wall)
    stats.observe("apollo", "/search", 0.5, "unavailable")  # a minute that will age out
    wall.now += 3600
    for ms in range(1, 21):
        stats.observe("apollo", "/search", ms / 1000, "timeout" if ms > 15 else None)
    wall.now += 60
    stats.observe("apollo", "/search", 0.1, None)
    minutes = stats.series("apollo")
    assert [m.calls for m in minutes] == [20, 1]
    first = minutes[0]
    assert first.at == (1_000_020 + 3600) // 60 * 60
    assert first.error_rate == 0.25
    assert first.p50_ms == 11.0
    assert first.p95_ms == 20.0
    assert stats.series("clay") == []


def test_last_calls_are_newest_first_and_bounded() -> None:
    """The recent calls list keeps the last few, newest first, with their outcome."""
    stats = IntegrationStats()
    for n in range(RECENT_CALLS + 5):
        stats.observe("hunter", f"/e{n}", 0.01, None if n % 2 else "rate_limited")
    calls = stats.last_calls("hunter")
    assert len(calls) == RECENT_CALLS
    assert calls[0].endpoint == f"/e{RECENT_CALLS + 4}"
    assert calls[0].outcome == "rate_limited"
    assert calls[1].outcome == "ok"
