"""An optional DogStatsD exporter (ROLEFERRY_DOGSTATSD_URL=udp://host:port): every
`dogstatsd_interval_s` it sends the Datadog agent what /metrics holds, this process's part.

Counters, and each histogram's `_count`, `_sum` and `_bucket` series, go as DogStatsD counts
of the increase since the last flush (the agent adds up the processes); gauges as gauges.
Names are the Prometheus names; labels become tags (`provider:apollo`, `endpoint:…`,
`status:success`, …), so the figures match /metrics one for one.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from urllib.parse import urlsplit

import structlog
from prometheus_client import REGISTRY, CollectorRegistry

from roleferry.background import cancel_and_wait

log = structlog.get_logger(__name__)
MAX_DATAGRAM = 1432
"""Bytes per UDP packet: DogStatsD's advice for a network with a 1500-byte MTU."""


def parse_address(url: str) -> tuple[str, int]:
    """host and port of udp://host:port; ValueError saying what is wrong otherwise."""
    parts = urlsplit(url)
    if parts.scheme != "udp" or not parts.hostname:
        raise ValueError(f"the DogStatsD URL must look like udp://127.0.0.1:8125, not {url!r}")
    try:
        port = parts.port or 8125
    except ValueError:
        raise ValueError(f"the DogStatsD URL {url!r} has an invalid port") from None
    return parts.hostname, port


def _tag(value: str) -> str:
    """DogStatsD reserves `|`, `,` and `#` in tags."""
    return value.replace("|", "_").replace(",", "_").replace("#", "_")


class DogStatsD:
    def __init__(
        self,
        url: str,
        interval_s: float = 10.0,
        registry: CollectorRegistry = REGISTRY,
        extra_tags: tuple[str, ...] = (),
    ) -> None:
        self.address = parse_address(url)
        self.interval_s = interval_s
        self.registry = registry
        self.extra_tags = extra_tags
        self._sent: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self._socket = socket.socket(
            socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET, socket.SOCK_DGRAM
        )
        self._socket.setblocking(False)
        self._task: asyncio.Task[None] | None = None

    def lines(self) -> list[str]:
        """The DogStatsD lines for what changed since the last call."""
        out: list[str] = []
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith("_created"):
                    continue
                labels = tuple(sorted(sample.labels.items()))
                tags = ",".join(
                    [*self.extra_tags, *(f"{k}:{_tag(v)}" for k, v in labels if v != "")]
                )
                suffix = f"|#{tags}" if tags else ""
                if family.type == "gauge":
                    out.append(f"{sample.name}:{sample.value:g}|g{suffix}")
                    continue
                key = (sample.name, labels)
                delta = sample.value - self._sent.get(key, 0.0)
                if delta <= 0:
                    continue
                self._sent[key] = sample.value
                out.append(f"{sample.name}:{delta:g}|c{suffix}")
        return out

    def flush(self) -> int:
        """Sends what changed, packed into datagrams; returns how many lines went."""
        lines = self.lines()
        packet: list[str] = []
        size = 0
        for line in lines:
            if packet and size + len(line) + 1 > MAX_DATAGRAM:
                self._send("\n".join(packet))
                packet, size = [], 0
            packet.append(line)
            size += len(line) + 1
        if packet:
            self._send("\n".join(packet))
        return len(lines)

    def _send(self, payload: str) -> None:
        try:
            self._socket.sendto(payload.encode(), self.address)
        except OSError as exc:  # the agent is down: metrics are best effort, never an outage
            log.warning("dogstatsd_send_failed", error=str(exc))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="dogstatsd")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        with contextlib.suppress(Exception):
            self.flush()
        self._socket.close()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                self.flush()
            except Exception:
                log.exception("dogstatsd_flush_failed")
