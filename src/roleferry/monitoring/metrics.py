"""Prometheus metrics of this process, served at /metrics. Labels never carry a contact,
an email or a key: only route templates, provider names, outcomes and status codes."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

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
)
RATE_LIMIT_REMAINING = Gauge(
    "roleferry_rate_limit_remaining",
    "Calls left in the provider's tightest rate window, as our shared limiter counts them.",
    ["provider"],
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
