"""The admin webhook log: filters, counts, one event, replay."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.errors import ApiError
from roleferry.web.render import fragment, page, problem_of, redirect_after
from roleferry.web.session import AdminConsole, AdminRequired, CsrfConsole
from roleferry.webhooks import routes as webhooks_api

EVENTS_SHOWN = 50
router = APIRouter(include_in_schema=False)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@router.get("/admin/webhooks", response_class=HTMLResponse)
async def webhooks_page(
    request: Request,
    console: AdminConsole,
    session: SessionDep,
    provider: str = "",
    type: str = "",
    status: str = "",
    since: str = "",
    until: str = "",
    q: str = "",
    before_id: int | None = None,
) -> Response:
    form = {
        "provider": provider,
        "type": type,
        "status": status,
        "since": since,
        "until": until,
        "q": q,
    }
    try:
        filters = webhooks_api.EventFilter(
            provider=provider or None,
            type=type or None,
            status=status or None,
            since=_parse_time(since),
            until=_parse_time(until),
            q=q or None,
        )
        events = await webhooks_api.list_events(
            console.user, session, filters, EVENTS_SHOWN, before_id
        )
        counts = await webhooks_api.count_events(console.user, session, filters)
        problem = None
    except (ValueError, ApiError) as exc:
        events, counts, problem = [], {}, problem_of(exc) if isinstance(exc, ApiError) else str(exc)
    template = "_webhook_rows.html" if request.headers.get("hx-request") else "webhooks.html"
    context = {
        "events": events,
        "counts": counts,
        "form": form,
        "problem": problem,
        "next_before": events[-1].id if len(events) == EVENTS_SHOWN else None,
    }
    if template.startswith("_"):
        return fragment(request, template, {"console": console, **context})
    return await page(request, console, template, context, session=session)


@router.get("/admin/webhooks/{event_pk}", response_class=HTMLResponse)
async def webhook_page(
    request: Request, event_pk: int, console: AdminConsole, session: SessionDep
) -> Response:
    try:
        event, problem = await webhooks_api.get_event(event_pk, console.user, session), None
    except ApiError as exc:
        event, problem = None, exc.message
    return await page(
        request,
        console,
        "webhook.html",
        {
            "event": event,
            "payload": json.dumps(event.payload, indent=2, sort_keys=True) if event else "",
            "problem": problem,
        },
        200 if event else 404,
        session,
    )


@router.post("/admin/webhooks/{event_pk}/replay", response_model=None)
async def replay(
    request: Request, event_pk: int, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    if not console.user.is_admin:
        raise AdminRequired
    try:
        await webhooks_api.replay_event(event_pk, console.user, runtime)
    except ApiError as exc:
        return fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    target = f"/admin/webhooks/{event_pk}?replayed=1"
    return redirect_after(request, target)
