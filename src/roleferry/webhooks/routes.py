"""Webhook receivers (signed, unauthenticated by key) and the admin view of the inbox."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVarTuple

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Select, Text, cast, func, select

from roleferry.api.deps import AdminUser, RuntimeDep, SessionDep
from roleferry.api.inputs import RowId
from roleferry.api.times import UtcDateTime
from roleferry.errors import Conflict, NotFound, ServiceUnavailable, error_response
from roleferry.monitoring.metrics import WEBHOOK_REQUESTS
from roleferry.runtime import Runtime
from roleferry.webhooks import inbox, signatures
from roleferry.webhooks.models import APPLIED, FAILED, PENDING, WebhookEvent

router = APIRouter(tags=["webhooks"])
admin = APIRouter(prefix="/api/v1/admin", tags=["admin"])


def count_refused_webhook(path: str) -> None:
    """The body limit refused a request: count it when it was a webhook delivery."""
    provider = path.removeprefix("/webhooks/").split("/", 1)[0]
    if path.startswith("/webhooks/") and provider in ("sendgrid", "stripe"):
        WEBHOOK_REQUESTS.labels(provider, "too_large").inc()


_INLINE_PARSE_BYTES = 64 * 1024


async def _parse(
    parse: Callable[[bytes], list[inbox.Incoming]], body: bytes
) -> list[inbox.Incoming]:
    """Small bodies (every real delivery) inline; a large batch in a worker thread: 5 MiB of
    small events takes seconds of CPU that would stall every other request."""
    if len(body) <= _INLINE_PARSE_BYTES:
        return parse(body)
    return await anyio.to_thread.run_sync(parse, body)


async def _receive(runtime: Runtime, provider: str, request: Request) -> JSONResponse:
    settings = runtime.settings
    public_key = settings.sendgrid_public_key() if provider == "sendgrid" else None
    secrets = settings.stripe_webhook_secrets() if provider == "stripe" else []
    if public_key is None and not secrets:
        # Live without its webhook secret: nothing could tell a real event from a forged one.
        WEBHOOK_REQUESTS.labels(provider, "not_configured").inc()
        setting = (
            "ROLEFERRY_SENDGRID_WEBHOOK_PUBLIC_KEY"
            if provider == "sendgrid"
            else "ROLEFERRY_STRIPE_WEBHOOK_SECRET"
        )
        return error_response(
            503,
            "webhook_not_configured",
            f"{provider} is live and {setting} is not set: its webhooks cannot be verified and "
            "are refused until it is",
            headers={"Retry-After": "3600"},
        )
    body = await request.body()
    try:
        if public_key is not None:
            signatures.verify_sendgrid(
                body,
                request.headers.get(signatures.SENDGRID_SIGNATURE),
                request.headers.get(signatures.SENDGRID_TIMESTAMP),
                public_key,
                settings.sendgrid_webhook_tolerance_s,
            )
            events = await _parse(inbox.parse_sendgrid, body)
        else:
            signatures.verify_stripe(
                body,
                request.headers.get(signatures.STRIPE_SIGNATURE),
                secrets,
                settings.stripe_webhook_tolerance_s,
            )
            events = await _parse(inbox.parse_stripe, body)
    except signatures.InvalidWebhook as exc:
        WEBHOOK_REQUESTS.labels(provider, exc.outcome).inc()
        return error_response(401, exc.outcome, str(exc))
    except inbox.MalformedPayload as exc:
        WEBHOOK_REQUESTS.labels(provider, "malformed").inc()
        return error_response(400, "malformed", str(exc))
    if runtime.inbox_writer is None:
        raise ServiceUnavailable("the inbox is not running")
    stored = await runtime.inbox_writer.store(provider, events)
    WEBHOOK_REQUESTS.labels(provider, "ok").inc()
    if runtime.inbox is not None and stored.accepted:
        runtime.inbox.wake()
    return JSONResponse({"accepted": stored.accepted, "duplicates": stored.duplicates})


@router.post("/webhooks/sendgrid")
async def sendgrid_events(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """SendGrid's signed Event Webhook: a JSON array of events, ECDSA-signed."""
    return await _receive(runtime, "sendgrid", request)


@router.post("/webhooks/stripe")
async def stripe_events(request: Request, runtime: RuntimeDep) -> JSONResponse:
    """One Stripe event, signed with Stripe-Signature."""
    return await _receive(runtime, "stripe", request)


class WebhookEventOut(BaseModel):
    id: int
    provider: str
    event_id: str
    type: str
    status: str
    attempts: int
    outcome: str | None
    retry_at: UtcDateTime | None
    occurred_at: UtcDateTime
    received_at: UtcDateTime
    applied_at: UtcDateTime | None
    payload: dict[str, Any]


Row = TypeVarTuple("Row")


class EventFilter(BaseModel):
    """What the admin list, its counts and the console's webhook log filter on."""

    provider: str | None = None
    type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    q: str | None = None

    def apply(self, query: Select[*Row]) -> Select[*Row]:
        if self.provider:
            query = query.where(WebhookEvent.provider == self.provider)
        if self.type:
            query = query.where(WebhookEvent.type == self.type)
        if self.status:
            query = query.where(WebhookEvent.status == self.status)
        if self.since:
            query = query.where(WebhookEvent.received_at >= self.since)
        if self.until:
            query = query.where(WebhookEvent.received_at < self.until)
        if self.q:
            pattern = (
                "%" + self.q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            )
            query = query.where(cast(WebhookEvent.payload, Text).like(pattern, escape="\\"))
        return query


def event_filter(
    provider: Annotated[str | None, Query(pattern="^(sendgrid|stripe)$")] = None,
    type: Annotated[
        str | None, Query(max_length=64, description="Event type, e.g. `delivered`.")
    ] = None,
    status: Annotated[str | None, Query(pattern="^(pending|applied|failed)$")] = None,
    since: Annotated[datetime | None, Query(description="Received at or after (ISO 8601).")] = None,
    until: Annotated[datetime | None, Query(description="Received before (ISO 8601).")] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text the payload contains.")
    ] = None,
) -> EventFilter:
    return EventFilter(provider=provider, type=type, status=status, since=since, until=until, q=q)


EventFilterDep = Annotated[EventFilter, Depends(event_filter)]


@admin.get("/webhook-events")
async def list_events(
    _admin: AdminUser,
    session: SessionDep,
    filters: EventFilterDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    before_id: Annotated[RowId | None, Query(description="Page: events older than this.")] = None,
) -> list[WebhookEventOut]:
    """Stored events, newest first, filtered by provider, type, status, time received and a
    text match on the payload."""
    query = filters.apply(select(WebhookEvent).order_by(WebhookEvent.id.desc()).limit(limit))
    if before_id:
        query = query.where(WebhookEvent.id < before_id)
    return [
        WebhookEventOut.model_validate(e, from_attributes=True)
        for e in await session.scalars(query)
    ]


@admin.get("/webhook-events/counts")
async def count_events(
    _admin: AdminUser, session: SessionDep, filters: EventFilterDep
) -> dict[str, int]:
    """How many events match the filters, per status (pending, applied, failed)."""
    query = filters.apply(select(WebhookEvent.status, func.count()).group_by(WebhookEvent.status))
    counts = {PENDING: 0, APPLIED: 0, FAILED: 0}
    for status_, count in await session.execute(query):
        counts[status_] = int(count)
    return counts


@admin.get("/webhook-events/{event_pk}")
async def get_event(event_pk: RowId, _admin: AdminUser, session: SessionDep) -> WebhookEventOut:
    """One event with its payload and what applying it did."""
    event = await session.get(WebhookEvent, event_pk)
    if event is None:
        raise NotFound(f"no webhook event {event_pk}")
    return WebhookEventOut.model_validate(event, from_attributes=True)


@admin.post("/webhook-events/{event_pk}/replay")
async def replay_event(event_pk: RowId, _admin: AdminUser, runtime: RuntimeDep) -> WebhookEventOut:
    """Queues a failed event to be applied again (an applied one is refused: no double effects)."""
    async with runtime.db.write_session() as session:
        event = await session.get(WebhookEvent, event_pk)
        if event is None:
            raise NotFound(f"no webhook event {event_pk}")
        if event.status != FAILED:
            raise Conflict(f"event {event_pk} is {event.status}; only failed events are replayed")
        event.status = PENDING
        event.outcome = None
        out = WebhookEventOut.model_validate(event, from_attributes=True)
    if runtime.inbox is not None:
        runtime.inbox.wake()
    return out
