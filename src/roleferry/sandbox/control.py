"""Fault injection, request statistics and rate-limit windows for the simulated providers.

`PUT /sandbox/_control/<provider>` changes a provider's `Faults`; every request to that
provider then passes through `ControlMiddleware`, which applies them before the simulator
runs and counts the response by endpoint and status afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from roleferry.sandbox.anthropic_faults import StreamFault

PROVIDERS = ("apollo", "clay", "hunter", "sendgrid", "anthropic", "stripe")


class RateLimit(BaseModel):
    """A window: `{"limit": 100, "period_s": 10}`, or the same written `"100/10"` (and `100`
    for 100 a second), as in ROLEFERRY_SANDBOX_FAULTS and `--fault`."""

    model_config = ConfigDict(extra="forbid")

    limit: int = Field(gt=0)
    period_s: float = Field(gt=0)

    @model_validator(mode="before")
    @classmethod
    def _from_text(cls, value: object) -> object:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"limit": value, "period_s": 1.0}
        if isinstance(value, str):
            limit, slash, period = value.strip().partition("/")
            try:
                return {"limit": int(limit), "period_s": float(period) if slash else 1.0}
            except ValueError:
                raise ValueError(
                    f"write rate_limit as LIMIT/SECONDS, such as 100/10; got {value!r}"
                ) from None
        return value


class Faults(BaseModel):
    """What a provider does wrong. Defaults: nothing."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    error_rate: float = Field(0.0, ge=0, le=1, description="Share of requests that fail.")
    error_status: int = Field(500, ge=400, le=599, description="Status of injected failures.")
    fail_next: int = Field(0, ge=0, description="The next N requests fail with error_status.")
    lose_next: int = Field(
        0,
        ge=0,
        description="The next N requests are carried out, then their answers never sent (the "
        "caller times out; what they did stays done).",
    )
    latency_ms: float = Field(0, ge=0, description="Added to every response.")
    jitter_ms: float = Field(0, ge=0, description="Uniform extra latency, 0..jitter_ms.")
    hang: bool = Field(False, description="Accept requests and never answer.")
    malformed: float = Field(0.0, ge=0, le=1, description="Share of 200s with invalid JSON.")
    down: bool = Field(False, description="Answer 503 to everything.")
    rate_limit: RateLimit | None = Field(None, description="Replaces the provider's own limit.")
    quota: int | None = Field(None, ge=0, description="Hunter: searches left this month.")
    mid_stream_error: float = Field(
        0.0, ge=0, le=1, description="Anthropic: share of streams that end in an error event."
    )
    stream_faults: list[StreamFault] = Field(
        default_factory=list,
        description="Anthropic: per-request fault shapes, first match by model (see "
        "sandbox/anthropic_faults.py).",
    )
    duplicate_rate: float = Field(
        0.02, ge=0, le=1, description="SendGrid/Stripe webhooks: share of deliveries sent twice."
    )
    reorder_rate: float = Field(
        0.1, ge=0, le=1, description="SendGrid webhooks: share of batches delivered shuffled."
    )
    drop_events: list[str] = Field(
        default_factory=list,
        description="Stripe: event types never delivered (listed as delivery_success=false).",
    )
    webhook_url: str | None = Field(None, description="Where events go; default this server.")
    flush_interval_s: float = Field(
        0.5, gt=0, description="SendGrid batches events this often (the real one: 30 s)."
    )
    max_retry_backoff_s: float = Field(
        60.0,
        gt=0,
        description="SendGrid/Stripe webhooks: failed deliveries are retried after 1 s, "
        "doubling up to this wait (compressed in tests of restarts).",
    )


class FixedWindow:
    """A fixed-window counter per key, as Apollo (and most providers) count."""

    def __init__(self, limit: int, period_s: float, clock: Callable[[], float] = time.time):
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self._windows: dict[str, tuple[int, int]] = {}

    def window_index(self) -> int:
        return int(self.clock() // self.period_s)

    def hit(self, key: str) -> tuple[bool, int, float]:
        """Counts one request; returns (allowed, remaining, seconds until the window resets)."""
        index = self.window_index()
        start, used = self._windows.get(key, (index, 0))
        if start != index:
            used = 0
        reset_in = (index + 1) * self.period_s - self.clock()
        if used >= self.limit:
            self._windows[key] = (index, used)
            return False, 0, reset_in
        self._windows[key] = (index, used + 1)
        return True, self.limit - used - 1, reset_in


@dataclass
class ProviderControl:
    faults: Faults = field(default_factory=Faults)
    stats: dict[str, dict[int, int]] = field(
        default_factory=lambda: defaultdict(lambda: defaultdict(int))
    )
    windows: dict[str, FixedWindow] = field(default_factory=dict)

    def window(self, name: str, limit: int, period_s: float) -> FixedWindow:
        """The named window, sized by the control's rate_limit when one is set."""
        if self.faults.rate_limit is not None:
            limit, period_s = self.faults.rate_limit.limit, self.faults.rate_limit.period_s
        existing = self.windows.get(name)
        if existing is None or (existing.limit, existing.period_s) != (limit, period_s):
            existing = self.windows[name] = FixedWindow(limit, period_s)
        return existing


ErrorRenderer = Callable[[int], tuple[dict[str, object], dict[str, str]]]


class Control:
    """All providers' faults and stats; one per sandbox."""

    def __init__(self, seed: int = 7) -> None:
        self.providers = {name: ProviderControl() for name in PROVIDERS}
        self.error_renderers: dict[str, ErrorRenderer] = {}
        self.rng = random.Random(seed)

    def __getitem__(self, provider: str) -> ProviderControl:
        return self.providers[provider]

    def update(self, provider: str, changes: dict[str, object]) -> Faults:
        current = self.providers[provider].faults.model_dump()
        current.update(changes)
        self.providers[provider].faults = Faults.model_validate(current)
        self.providers[provider].windows.clear()
        return self.providers[provider].faults

    def reset(self) -> None:
        for name in PROVIDERS:
            self.providers[name] = ProviderControl()

    def record(self, provider: str, endpoint: str, status: int) -> None:
        self.providers[provider].stats[endpoint][status] += 1

    def stats(self) -> dict[str, dict[str, dict[str, int]]]:
        return {
            name: {
                endpoint: {str(status): n for status, n in sorted(by_status.items())}
                for endpoint, by_status in control.stats.items()
            }
            for name, control in self.providers.items()
        }

    def error_response(
        self, provider: str, status: int
    ) -> tuple[dict[str, object], dict[str, str]]:
        render = self.error_renderers.get(provider)
        if render is None:
            return {"error": {"message": f"injected error {status}"}}, {}
        return render(status)


def parse_fault_spec(spec: str) -> tuple[str, dict[str, object]]:
    """`apollo:error_rate=0.3` or `apollo:rate_limit=100/10` → ("apollo", {...})."""
    provider, _, assignments = spec.partition(":")
    if provider not in PROVIDERS or not assignments:
        raise ValueError(f"expected PROVIDER:NAME=VALUE with PROVIDER one of {PROVIDERS}: {spec!r}")
    changes: dict[str, object] = {}
    for assignment in assignments.split(";"):
        name, _, value = assignment.partition("=")
        if value.lower() in ("true", "false"):
            changes[name] = value.lower() == "true"
        else:
            try:
                changes[name] = json.loads(value)
            except json.JSONDecodeError:
                changes[name] = value
    validated = Faults.model_validate({**Faults().model_dump(), **changes}).model_dump()
    return provider, {name: validated[name] for name in changes}


class ControlMiddleware:
    """Applies a provider's faults to its requests and counts every response.

    The provider is the first path segment under the sandbox (`/apollo/...`); the endpoint in
    the statistics is the matched route's template, so ids never multiply the series.
    """

    def __init__(self, app: ASGIApp, control: Control) -> None:
        self.app = app
        self.control = control

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        provider = _provider_of(scope)
        if scope["type"] != "http" or provider is None:
            await self.app(scope, receive, send)
            return
        faults = self.control[provider].faults
        status = 0

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if faults.hang:
                await _wait_for_disconnect(receive)
                status = 499
                return
            delay = faults.latency_ms + self.control.rng.uniform(0, faults.jitter_ms)
            if delay:
                await asyncio.sleep(delay / 1000)
            if faults.down:
                await self._error(provider, 503, counting_send)
                return
            if faults.fail_next > 0:
                faults.fail_next -= 1
                await self._error(provider, faults.error_status, counting_send)
                return
            if faults.lose_next > 0:
                faults.lose_next -= 1
                await self.app(scope, receive, _discard)
                await _wait_for_disconnect(receive)
                status = 499
                return
            if faults.error_rate and self.control.rng.random() < faults.error_rate:
                await self._error(provider, faults.error_status, counting_send)
                return
            if faults.malformed and self.control.rng.random() < faults.malformed:
                await _send(counting_send, 200, b'{"data": [{"truncated": tr', {})
                return
            await self.app(scope, receive, counting_send)
        finally:
            route = scope.get("route")
            endpoint = _strip_provider(getattr(route, "path", None) or scope["path"], provider)
            self.control.record(provider, endpoint, status or 500)

    async def _error(self, provider: str, status: int, send: Send) -> None:
        body, headers = self.control.error_response(provider, status)
        await _send(send, status, json.dumps(body).encode(), headers)


def _provider_of(scope: Scope) -> str | None:
    path: str = scope.get("path", "")
    root = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    first = path.lstrip("/").split("/", 1)[0]
    return first if first in PROVIDERS else None


def _strip_provider(path: str, provider: str) -> str:
    marker = f"/{provider}"
    return path[path.index(marker) + len(marker) :] if marker in path else path


async def _discard(_message: Message) -> None:
    """The answer of a request whose answer is lost."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    raw_headers += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})
