"""Notifications and the bell's unread count."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.errors import ApiError
from roleferry.notifications import routes as notifications_api
from roleferry.web.render import fragment, page, problem_of, redirect_after
from roleferry.web.session import Console, CsrfConsole

router = APIRouter(include_in_schema=False)


@router.get("/notifications", response_class=HTMLResponse)
async def notifications_page(request: Request, console: Console, session: SessionDep) -> Response:
    try:
        rows, problem = await notifications_api.notifications(console.user, session), None
    except Exception as exc:
        rows, problem = [], problem_of(exc)
    return await page(
        request,
        console,
        "notifications.html",
        {"notifications": rows, "problem": problem},
        session=session,
    )


@router.post("/notifications/{notification_id}/open", response_model=None)
async def open_notification(
    request: Request, notification_id: int, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    """Marks it read (the API's `POST …/read`) and goes to what it is about."""
    try:
        note = await notifications_api.mark_read(notification_id, console.user, runtime)
    except ApiError as exc:
        return await page(
            request, console, "notifications.html", {"notifications": [], "problem": exc.message}
        )
    return redirect_after(request, _target(note.kind, note.data))


def _target(kind: str, data: dict[str, Any]) -> str:
    """The page a notification is about: its job, its sequence run, the senders."""
    about = str(data.get("id", ""))
    if kind.startswith("enrichment") and about:
        return f"/jobs/{quote(about)}"
    if kind.startswith("sequence_run") and about and data.get("sequence_id"):
        return f"/sequences/{quote(str(data['sequence_id']))}?run={quote(about)}"
    if kind.startswith("sender"):
        return "/sequences"
    return "/notifications"


@router.get("/notifications/bell", response_class=HTMLResponse)
async def bell(request: Request, console: Console, session: SessionDep) -> Response:
    unread = (await notifications_api.unread_count(console.user, session)).unread
    return fragment(request, "_bell.html", {"unread": unread})
