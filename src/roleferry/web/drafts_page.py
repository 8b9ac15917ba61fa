"""The Drafts pages: write a draft and watch it stream, continue an incomplete one, edit and
save, list yours; each through the drafting API's own route functions."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from pydantic import ValidationError

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.drafting import routes as drafts_api
from roleferry.drafting.prompt import DraftRequest
from roleferry.errors import ApiError
from roleferry.web.render import fragment, invalid, page, problem_of, redirect_after, refused
from roleferry.web.session import Console, ConsoleSession, CsrfConsole

DRAFTS_SHOWN = 50
router = APIRouter(include_in_schema=False)


@router.get("/drafts", response_class=HTMLResponse)
async def drafts_page(
    request: Request,
    console: Console,
    session: SessionDep,
    before: Annotated[str | None, Query(max_length=64)] = None,
    name: Annotated[str, Query(max_length=200)] = "",
    title: Annotated[str, Query(max_length=200)] = "",
    company: Annotated[str, Query(max_length=200)] = "",
    domain: Annotated[str, Query(max_length=253)] = "",
) -> Response:
    """Yours, newest first, under the form (prefilled by a person's "Draft" on Search)."""
    context: dict[str, Any] = {
        "recipient": {"name": name, "title": title, "company": company, "domain": domain}
    }
    try:
        drafts = await drafts_api.list_drafts(console.user, session, DRAFTS_SHOWN, before)
        context |= {"drafts": drafts, "problem": None}
    except Exception as exc:
        context |= {"drafts": [], "problem": problem_of(exc)}
    more = len(context["drafts"]) == DRAFTS_SHOWN
    context["older"] = context["drafts"][-1].id if more else None
    return await page(request, console, "drafts.html", context, session=session)


def _streamed_or_stored(answer: Response, request: Request) -> Response:
    """Server-sent events go to the page's script as they come; a plain form post (no
    script) waits for the stored draft and opens it."""
    if isinstance(answer, StreamingResponse):
        return answer
    draft = json.loads(bytes(answer.body))
    return redirect_after(request, f"/drafts/{draft['id']}")


@router.post("/drafts", response_model=None)
async def create(
    request: Request,
    console: CsrfConsole,
    runtime: RuntimeDep,
    name: Annotated[str, Form()] = "",
    title: Annotated[str, Form()] = "",
    company: Annotated[str, Form()] = "",
    domain: Annotated[str, Form()] = "",
    role: Annotated[str, Form()] = "",
    about: Annotated[str, Form()] = "",
    links: Annotated[str, Form()] = "",
    tone: Annotated[str, Form()] = "friendly",
    length: Annotated[str, Form()] = "120",
) -> Response:
    """`POST /api/v1/drafts`, streamed when the page asks for `text/event-stream`."""
    recipient = {"name": name, "title": title, "company": company, "domain": domain}
    aim: dict[str, Any] = {"role": role, "links": [x.strip() for x in links.split() if x]}
    if about.strip():
        aim["about"] = about
    try:
        body = DraftRequest.model_validate(
            {
                "recipient": {k: v for k, v in recipient.items() if v.strip()},
                "aim": aim,
                "tone": tone,
                "length": length,
            }
        )
        answer = await drafts_api.create_draft(body, request, console.user, runtime)
    except ValidationError as exc:
        return fragment(request, "_error.html", {"problem": invalid(exc), "retry": False}, 422)
    except ApiError as exc:
        return refused(request, exc)
    return _streamed_or_stored(answer, request)


async def _panel(
    console: ConsoleSession, draft_id: str, session: SessionDep, **extra: Any
) -> dict[str, Any]:
    draft = await drafts_api.get_draft(draft_id, console.user, session)
    return {"draft": draft, "console": console, **extra}


@router.get("/drafts/{draft_id}", response_class=HTMLResponse)
async def draft_page(
    request: Request, draft_id: str, console: Console, session: SessionDep
) -> Response:
    try:
        context = await _panel(console, draft_id, session)
    except ApiError as exc:
        context = {"draft": None, "problem": exc.message, "not_found": exc.status_code == 404}
        return await page(request, console, "draft.html", context, exc.status_code, session)
    return await page(request, console, "draft.html", context, session=session)


@router.get("/drafts/{draft_id}/panel", response_class=HTMLResponse)
async def draft_panel(
    request: Request, draft_id: str, console: Console, session: SessionDep
) -> Response:
    """The draft as stored, for the page once its stream has ended."""
    try:
        return fragment(request, "_draft.html", await _panel(console, draft_id, session))
    except ApiError as exc:
        return fragment(
            request, "_error.html", {"problem": exc.message, "retry": f"/drafts/{draft_id}"}, 404
        )


@router.post("/drafts/{draft_id}", response_model=None)
async def edit(
    request: Request,
    draft_id: str,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    subject: Annotated[str, Form()] = "",
    body: Annotated[str, Form()] = "",
) -> Response:
    """`PATCH /api/v1/drafts/{id}`: the edit is stored beside what was written. A refusal
    comes back above the form, the text kept."""
    problem, status_code = None, 200
    try:
        change = drafts_api.DraftEdit.model_validate({"subject": subject, "body": body})
        await drafts_api.edit_draft(draft_id, change, console.user, runtime)
    except ValidationError as exc:
        problem, status_code = invalid(exc), 422
    except ApiError as exc:
        problem, status_code = exc.message, exc.status_code
    if problem is None and not request.headers.get("hx-request"):
        return redirect_after(request, f"/drafts/{draft_id}")
    try:
        context = await _panel(console, draft_id, session, saved=problem is None)
    except ApiError as exc:
        return fragment(request, "_error.html", {"problem": exc.message, "retry": False}, 404)
    if problem is not None:
        context |= {"problem": problem, "subject": subject, "body": body}
    return fragment(request, "_draft.html", context, status_code)


@router.post("/drafts/{draft_id}/continue", response_model=None)
async def continue_draft(
    request: Request, draft_id: str, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    """`POST /api/v1/drafts/{id}/continue`, streamed like a new draft."""
    try:
        answer = await drafts_api.continue_draft(draft_id, request, console.user, runtime)
    except ApiError as exc:
        return refused(request, exc)
    return _streamed_or_stored(answer, request)
