"""Receiving: verify, parse, and store each event once, in the one transaction before our 2xx.
The acknowledgement does only that insert; the processor applies events afterwards."""

from __future__ import annotations

import asyncio
import hashlib
import json
import sqlite3
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import orjson
from sqlalchemy.dialects import postgresql

from roleferry.background import cancel_and_wait
from roleferry.db import Database
from roleferry.monitoring.metrics import count_webhook_events
from roleferry.webhooks.models import EVENTS_TABLE

SENDGRID_TYPES = frozenset(
    # The Event Webhook's delivery and engagement events (SendGrid docs, "Event types").
    (
        *("processed", "dropped", "delivered", "deferred", "bounce"),
        *("open", "click", "spamreport", "unsubscribe", "group_unsubscribe", "group_resubscribe"),
    )
)
STRIPE_TYPES = frozenset(
    (
        "checkout.session.completed",
        "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "charge.refunded",
        "charge.succeeded",
        "refund.created",
    )
)


EVENT_ID_MAX = 128
"""The length of `webhook_events.event_id`."""


class MalformedPayload(Exception):
    """Signed correctly, but not what the provider sends: a 400."""


@dataclass(frozen=True)
class Incoming:
    event_id: str
    type: str
    occurred_at: float
    payload: dict[str, Any]


@dataclass(frozen=True)
class Stored:
    accepted: int
    duplicates: int


def type_label(provider: str, event_type: str) -> str:
    """A bounded metric label: known types by name, the rest as `other`."""
    known = SENDGRID_TYPES if provider == "sendgrid" else STRIPE_TYPES
    return event_type if event_type in known else "other"


def _event_id(raw: str) -> str:
    """The provider's id when it fits the column; a longer one by its digest, never cut, since
    two ids alike in their first 128 characters would become one and the second be dropped."""
    if len(raw) <= EVENT_ID_MAX:
        return raw
    return "sha256:" + hashlib.sha256(raw.encode()).hexdigest()


def _json(body: bytes) -> Any:
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from exc
    # JSON can only hold a NUL as the escape `\u0000`: look for it in the bytes, a C-speed
    # search, before walking anything.
    return _without_nul(parsed) if b"\\u0000" in body else parsed


def _without_nul(value: Any) -> Any:
    """The value with every NUL character replaced by U+FFFD. PostgreSQL text cannot hold a
    NUL, and a JSON payload holding one fails every `->>` read of its row: one such event,
    stored, would stop the processor's batches for good."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_without_nul(v) for v in value]
    if isinstance(value, dict):
        return {_without_nul(k): _without_nul(v) for k, v in value.items()}
    return value


def parse_sendgrid(body: bytes) -> list[Incoming]:
    events = _json(body)
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise MalformedPayload("a SendGrid batch is a JSON array of event objects")
    parsed = []
    for event in events:
        kind = event.get("event")
        if not isinstance(kind, str):
            raise MalformedPayload("every SendGrid event needs an `event` type")
        event_id = event.get("sg_event_id")
        if not isinstance(event_id, str) or not event_id:
            canonical = json.dumps(event, sort_keys=True, separators=(",", ":")).encode()
            event_id = "sha256:" + hashlib.sha256(canonical).hexdigest()
        stamp = event.get("timestamp")
        parsed.append(
            Incoming(
                _event_id(event_id),
                kind[:64],
                float(stamp) if isinstance(stamp, int | float) else time.time(),
                event,
            )
        )
    return parsed


def parse_stripe(body: bytes) -> list[Incoming]:
    event = _json(body)
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not isinstance(event.get("type"), str)
    ):
        raise MalformedPayload("a Stripe event is a JSON object with `id` and `type`")
    created = event.get("created")
    return [
        Incoming(
            _event_id(event["id"]),
            event["type"][:64],
            float(created) if isinstance(created, int | float) else time.time(),
            event,
        )
    ]


async def insert_new(database: Database, batch: list[tuple[str, Incoming]]) -> set[tuple[str, str]]:
    """Inserts what is new and skips what is known, in one transaction; safe when copies race
    (the unique key decides). Returns the (provider, event id) pairs inserted."""
    if not batch:
        return set()
    if database.urls.is_sqlite:
        return await database.run_sqlite_write(partial(_insert_new_sqlite, batch))
    rows = [
        {
            "provider": provider,
            "event_id": e.event_id,
            "type": e.type,
            "payload": e.payload,
            "occurred_at": e.occurred_at,
            "status": "pending",
            "attempts": 0,
        }
        # In key order: two processes storing copies of the same events lock their keys in
        # the same order, so they wait for each other instead of deadlocking.
        for provider, e in sorted(batch, key=lambda pe: (pe[0], pe[1].event_id))
    ]
    table = EVENTS_TABLE
    statement = (
        postgresql.insert(table)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(table.c.provider, table.c.event_id)
    )
    # One statement compiled once (cached), its rows sent in multi-row batches
    # ("insertmanyvalues"): compiling a fresh 500-row VALUES clause per call cost more than
    # the write itself.
    async with database.write_session() as session:
        result = await session.execute(statement, rows)
        return {(p, i) for p, i in result.all()}


def _insert_new_sqlite(
    batch: list[tuple[str, Incoming]], connection: sqlite3.Connection
) -> set[tuple[str, str]]:
    """The SQLite hot path, on the driver: sqlite3's executemany cannot return rows, so the
    events already known are read first. That is exact because it runs under the one
    process's write lock (`Database.run_sqlite_write`); the unique key still decides."""
    wanted = {(provider, event.event_id) for provider, event in batch}
    known: set[tuple[str, str]] = set()
    for provider in {p for p, _ in wanted}:
        ids = sorted(i for p, i in wanted if p == provider)
        for start in range(0, len(ids), 900):
            chunk = ids[start : start + 900]
            marks = ",".join("?" * len(chunk))
            rows = connection.execute(
                "SELECT event_id FROM webhook_events "  # noqa: S608
                f"WHERE provider = ? AND event_id IN ({marks})",
                (provider, *chunk),
            )
            known.update((provider, i) for (i,) in rows)
    received = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    connection.executemany(
        "INSERT INTO webhook_events (provider, event_id, type, payload, occurred_at, "
        "received_at, status, attempts) VALUES (?, ?, ?, ?, ?, ?, 'pending', 0) "
        "ON CONFLICT (provider, event_id) DO NOTHING",
        [
            (p, e.event_id, e.type, orjson.dumps(e.payload).decode(), e.occurred_at, received)
            for p, e in batch
        ],
    )
    return wanted - known


@dataclass
class _Request:
    provider: str
    events: list[Incoming]
    done: asyncio.Future[Stored]


class InboxWriter:
    """Stores the events of every concurrent delivery in one transaction at a time (group
    commit): each delivery's 2xx still waits for the commit that holds its events, but a
    burst of deliveries costs one write, not one each."""

    def __init__(self, database: Database, max_events: int = 5_000) -> None:
        self.database = database
        self.max_events = max_events
        self._queue: asyncio.Queue[_Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="webhook-inbox-writer")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        while not self._queue.empty():
            self._queue.get_nowait().done.cancel()

    async def store(self, provider: str, events: list[Incoming]) -> Stored:
        if not events:
            return Stored(0, 0)
        if self._task is None:
            raise RuntimeError("the inbox writer is not running")
        request = _Request(provider, events, asyncio.get_running_loop().create_future())
        await self._queue.put(request)
        return await request.done

    async def _run(self) -> None:
        while True:
            group = [await self._queue.get()]
            size = len(group[0].events)
            while size < self.max_events and not self._queue.empty():
                request = self._queue.get_nowait()
                group.append(request)
                size += len(request.events)
            try:
                inserted = await insert_new(
                    self.database, [(r.provider, e) for r in group for e in r.events]
                )
            except Exception as exc:
                for request in group:
                    if not request.done.done():
                        request.done.set_exception(exc)
                continue
            for request in group:
                if not request.done.done():
                    request.done.set_result(_claim(request, inserted))


def _claim(request: _Request, inserted: set[tuple[str, str]]) -> Stored:
    """Counts this delivery's new events; a copy in a later delivery of the same group is a
    duplicate, so each new event is accepted exactly once."""
    accepted = 0
    counts: Counter[tuple[str, str]] = Counter()
    for event in request.events:
        key = (request.provider, event.event_id)
        new = key in inserted
        if new:
            inserted.discard(key)
            accepted += 1
        counts[type_label(request.provider, event.type), "accepted" if new else "duplicate"] += 1
    count_webhook_events(request.provider, counts)
    return Stored(accepted, len(request.events) - accepted)
