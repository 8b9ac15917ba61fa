"""Receiving: verify, parse, and store each event once, in the one transaction before our 2xx.
The acknowledgement does only that insert; the processor applies events afterwards."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.monitoring.metrics import WEBHOOK_EVENTS
from roleferry.webhooks.models import WebhookEvent

SENDGRID_TYPES = frozenset(
    (
        "processed",
        "dropped",
        "delivered",
        "deferred",
        "bounce",
        "open",
        "click",
        "spamreport",
        "unsubscribe",
        "group_unsubscribe",
        "group_resubscribe",
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


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedPayload(f"the body is not valid JSON: {exc}") from exc


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
                event_id[:128],
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
            event["id"][:128],
            event["type"][:64],
            float(created) if isinstance(created, int | float) else time.time(),
            event,
        )
    ]


async def store(session: AsyncSession, provider: str, events: list[Incoming]) -> Stored:
    """Inserts what is new and skips what is known, in the caller's transaction; safe when
    copies race (the unique key decides)."""
    if not events:
        return Stored(0, 0)
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    make_insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
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
        for e in events
    ]
    statement = (
        make_insert(WebhookEvent)
        .values(rows)
        .on_conflict_do_nothing(index_elements=["provider", "event_id"])
        .returning(WebhookEvent.event_id)
    )
    inserted = set((await session.execute(statement)).scalars())
    return _counted(provider, events, inserted)


def _counted(provider: str, events: list[Incoming], inserted: set[str]) -> Stored:
    for event in events:
        outcome = "accepted" if event.event_id in inserted else "duplicate"
        WEBHOOK_EVENTS.labels(provider, type_label(provider, event.type), outcome).inc()
    return Stored(len(inserted), len(events) - len(inserted))
