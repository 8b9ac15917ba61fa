"""Outgoing webhook delivery for the simulated SendGrid and Stripe: signed per attempt,
retried with exponential backoff until a 2xx or the provider's retry horizon, and now and
then sent twice, as the real senders do.

Where deliveries may go is limited (`DeliveryTargets`): this server's own `/webhooks/...`
receivers, or a URL under a prefix listed in ROLEFERRY_SANDBOX_WEBHOOK_TARGETS, which then
passes the outbound address guard like a callback. Anything else is refused, not retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import httpx
import structlog

from roleferry import outbound

log = structlog.get_logger(__name__)

Signer = Callable[[bytes], dict[str, str]]


@dataclass(order=True)
class Delivery:
    next_at: float
    seq: int
    url: str = field(compare=False)
    body: bytes = field(compare=False)
    sign: Signer = field(compare=False)
    first_at: float = field(compare=False)
    attempts: int = field(default=0, compare=False)
    on_delivered: Callable[[], None] | None = field(default=None, compare=False)


class DeliveryTargets:
    """Which URLs the simulators deliver webhooks to, and the address to connect to for each."""

    def __init__(
        self,
        server_url: str,
        extra_prefixes: Iterable[str] = (),
        policy: outbound.AddressPolicy | None = None,
        resolver: outbound.Resolver = outbound.system_resolver,
        live: Iterable[str] = (),
    ) -> None:
        server = httpx.URL(server_url)
        self._server = (server.scheme, server.host, server.port)
        self._server_path = server.path.rstrip("/") + "/webhooks/"
        self.extra_prefixes = tuple(extra_prefixes)
        self.policy = policy or outbound.AddressPolicy()
        self.resolver = resolver
        self.live = frozenset(live)

    def _own(self, url: httpx.URL) -> bool:
        return (url.scheme, url.host, url.port) == self._server and url.path.startswith(
            self._server_path
        )

    def refusal(self, provider: str, url: str) -> str | None:
        """Why url may not receive this provider's webhooks, or None when it may."""
        if provider in self.live:
            return (
                f"{provider} is live on this server: its simulator sends no webhooks "
                "(its events would be signed with the sandbox's public credentials)"
            )
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            return f"{url!r} is not a valid URL"
        if self._own(parsed) or any(url.startswith(p) for p in self.extra_prefixes):
            return None
        return (
            f"webhooks go only to this server's receivers ({self._server_path}...) or to a URL "
            "under a prefix in ROLEFERRY_SANDBOX_WEBHOOK_TARGETS"
        )

    async def pin(self, provider: str, url: str) -> outbound.Target | None:
        """Where to connect for url: None for this server itself (the operator's own address),
        else the guard's checked address; raises UnsafeURL when refused."""
        refused = self.refusal(provider, url)
        if refused is not None:
            raise outbound.UnsafeURL(refused)
        if self._own(httpx.URL(url)):
            return None
        return await outbound.resolve(url, self.policy, self.resolver, "webhook target")


@dataclass
class DeliveryStats:
    delivered: int = 0
    failed_attempts: int = 0
    given_up: int = 0
    duplicates_sent: int = 0
    refused: int = 0

    def as_dict(self, pending: int) -> dict[str, int]:
        return {**self.__dict__, "pending": pending}


class WebhookSender:
    """A queue of signed deliveries and the task that works it.

    Defaults: first retry after `base_backoff_s` (1 s), doubling to `max_backoff_s` (60 s),
    jittered ±20%, for up to `horizon_s` (SendGrid: 24 h, Stripe: 3 days); 10 s per attempt.
    """

    def __init__(
        self,
        name: str,
        *,
        duplicate_rate: Callable[[], float],
        horizon_s: float,
        targets: DeliveryTargets,
        base_backoff_s: float = 1.0,
        max_backoff_s: Callable[[], float] = lambda: 60.0,
        timeout_s: float = 10.0,
        concurrency: int = 8,
        seed: int = 7,
    ) -> None:
        self.name = name
        self.duplicate_rate = duplicate_rate
        self.horizon_s = horizon_s
        self.targets = targets
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.timeout_s = timeout_s
        self.stats = DeliveryStats()
        self._queue: list[Delivery] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(concurrency)
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._in_flight: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        return len(self._queue) + len(self._in_flight)

    def enqueue(
        self,
        url: str,
        body: bytes,
        sign: Signer,
        on_delivered: Callable[[], None] | None = None,
    ) -> None:
        """Queues a delivery; `on_delivered` runs once the target has acknowledged it."""
        now = time.time()
        heapq.heappush(
            self._queue, Delivery(now, next(self._seq), url, body, sign, now, 0, on_delivered)
        )
        self._wake.set()

    def clear(self) -> None:
        self._queue.clear()
        self.stats = DeliveryStats()

    def start(self) -> None:
        if self._task is None:
            self._client = httpx.AsyncClient(timeout=self.timeout_s, trust_env=False)
            self._task = asyncio.create_task(self._run(), name=f"sandbox-{self.name}-webhooks")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            for task in list(self._in_flight):
                task.cancel()
            await asyncio.gather(self._task, *self._in_flight, return_exceptions=True)
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            while self._queue and self._queue[0].next_at <= now:
                delivery = heapq.heappop(self._queue)
                await self._slots.acquire()
                task = asyncio.create_task(self._attempt(delivery))
                self._in_flight.add(task)
                task.add_done_callback(self._in_flight.discard)
            timeout = self._queue[0].next_at - time.time() if self._queue else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=timeout)

    async def _attempt(self, delivery: Delivery) -> None:
        try:
            try:
                target = await self.targets.pin(self.name, delivery.url)
            except outbound.UnsafeURL as exc:
                self.stats.refused += 1
                log.warning("sandbox_webhook_refused", sender=self.name, reason=str(exc))
                return
            ok = await self._post(delivery, target)
            if ok:
                self.stats.delivered += 1
                if delivery.on_delivered is not None:
                    delivery.on_delivered()
                if self._rng.random() < self.duplicate_rate():
                    self.stats.duplicates_sent += 1
                    await self._post(delivery, target)
                return
            self.stats.failed_attempts += 1
            delivery.attempts += 1
            now = time.time()
            if now - delivery.first_at >= self.horizon_s:
                self.stats.given_up += 1
                return
            backoff = min(self.max_backoff_s(), self.base_backoff_s * 2 ** (delivery.attempts - 1))
            delivery.next_at = now + backoff * self._rng.uniform(0.8, 1.2)
            delivery.seq = next(self._seq)
            heapq.heappush(self._queue, delivery)
            self._wake.set()
        finally:
            self._slots.release()

    async def _post(self, delivery: Delivery, target: outbound.Target | None) -> bool:
        assert self._client is not None
        headers = {"content-type": "application/json", **delivery.sign(delivery.body)}
        try:
            if target is None:
                request = self._client.build_request(
                    "POST", delivery.url, content=delivery.body, headers=headers
                )
            else:
                request = target.request(self._client, delivery.body, headers)
            response = await self._client.send(request)
        except httpx.HTTPError as exc:
            log.debug("sandbox_webhook_failed", sender=self.name, error=type(exc).__name__)
            return False
        return 200 <= response.status_code < 300
