"""Prometheus metrics, served at /metrics. Labels never carry a contact, an email or a key:
only route templates, provider names, outcomes and status codes.

With several processes (`serve --workers N`, or any process given PROMETHEUS_MULTIPROC_DIR)
prometheus-client's multiprocess mode applies: each process writes its figures to files in
that folder and /metrics sums the counters and histograms of every process, dead ones
included (their calls happened). The two gauges hold shared state (breakers and budgets live
in Redis), so /metrics shows the most recent value any live process set.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
    values,
)

disable_created_metrics()  # type: ignore[no-untyped-call]

HTTP_REQUESTS = Counter(
    "roleferry_http_requests_total",
    "HTTP requests served, by method, route template and status code.",
    ["method", "route", "status"],
)
HTTP_LATENCY = Histogram(
    "roleferry_http_request_duration_seconds",
    "Time to serve an HTTP request, by method and route template.",
    ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

INTEGRATION_LATENCY = Histogram(
    "roleferry_integration_latency_seconds",
    "Time of one provider call attempt.",
    ["provider", "endpoint", "status", "error_type"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)
INTEGRATION_CALLS = Counter(
    "roleferry_integration_calls_total",
    "Provider call attempts, by outcome (status success or error, and the error's type).",
    ["provider", "endpoint", "status", "error_type"],
)
CIRCUIT_STATE = Gauge(
    "roleferry_circuit_state",
    "Circuit breaker state per provider: 0 closed, 1 half-open, 2 open.",
    ["provider"],
    multiprocess_mode="livemostrecent",
)
RATE_LIMIT_REMAINING = Gauge(
    "roleferry_rate_limit_remaining",
    "Calls left in the provider's tightest rate window, as our shared limiter counts them.",
    ["provider"],
    multiprocess_mode="livemostrecent",
)

WEBHOOK_REQUESTS = Counter(
    "roleferry_webhook_requests_total",
    "Webhook deliveries received: ok, invalid_signature, stale_timestamp, malformed, too_large.",
    ["provider", "outcome"],
)
WEBHOOK_EVENTS = Counter(
    "roleferry_webhook_events_total",
    "Webhook events: accepted (new), duplicate (known), applied, failed, retried (a try failed).",
    ["provider", "type", "outcome"],
)
WEBHOOK_LAG = Histogram(
    "roleferry_webhook_lag_seconds",
    "From the provider's event time to our applying it.",
    ["provider"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 3600),
)


def count_webhook_events(provider: str, counts: dict[tuple[str, str], int]) -> None:
    """Adds per-(type, outcome) totals at once: a `labels()` look-up per event cost more than
    storing it."""
    for (event_type, outcome), n in counts.items():
        WEBHOOK_EVENTS.labels(provider, event_type, outcome).inc(n)


MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = CONTENT_TYPE_LATEST
_PID = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> Path | None:
    found = os.environ.get(MULTIPROC_ENV)
    return Path(found) if found else None


def use_multiprocess(directory: Path, *, clean: bool) -> None:
    """Puts this process (and the processes it starts, through the environment) in
    multiprocess mode, writing to `directory`; `clean` empties it first, for the process that
    starts the others: figures of an earlier run must not be added to this one's. Call before
    any metric is recorded."""
    if clean and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    values.ValueClass = values.MultiProcessValue()  # type: ignore[no-untyped-call]


def _mark_dead_processes(directory: Path) -> None:
    """Drops the live gauges of processes that have exited (a restarted worker has a new pid);
    their counters stay, as what they counted happened."""
    for pid in {int(m.group(1)) for f in directory.glob("*.db") if (m := _PID.search(f.name))}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
        except PermissionError:
            continue


def exposition() -> bytes:
    """What /metrics answers: this process's figures, or every process's when several share
    a multiprocess folder."""
    directory = multiprocess_dir()
    if directory is None:
        return generate_latest()
    _mark_dead_processes(directory)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, str(directory))  # type: ignore[no-untyped-call]
    return generate_latest(registry)
