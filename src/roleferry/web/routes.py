"""The console: server-rendered pages over the same route functions and services the JSON API
uses, so that every page action is an API call a user could make with their key.

Pages need a session (signed in with an API key, `web.session`); every form and every htmx
request that changes something carries the session's CSRF token."""

from __future__ import annotations

import ipaddress
import json
import secrets
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, FastAPI, Form, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.api_client import KEY_FILE
from roleferry.config import Provider
from roleferry.enrichment import routes as jobs_api
from roleferry.errors import ApiError
from roleferry.monitoring.routes import integration_status
from roleferry.notifications import routes as notifications_api
from roleferry.runtime import Runtime
from roleferry.sandbox.app import Sandbox
from roleferry.sandbox.control import Faults
from roleferry.search import routes as search_api
from roleferry.search.models import EnrichRequest, SearchRequest
from roleferry.users import service as users
from roleferry.users.models import ApiKey
from roleferry.web.session import (
    COOKIE,
    LIFETIME_S,
    AdminConsole,
    AdminRequired,
    Console,
    ConsoleSession,
    CsrfConsole,
    CsrfFailed,
    SignInRequired,
    cookie_value,
    is_https,
    read_session,
)
from roleferry.webhooks import routes as webhooks_api

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)
SIGNIN_COOKIE = "rf_signin"
JOB_ROWS_SHOWN = 100
EVENTS_SHOWN = 50
PERIODS = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}


def _period(seconds: float) -> str:
    return f"per {PERIODS[seconds]}" if seconds in PERIODS else f"per {seconds:g} s"


async def _page(
    request: Request,
    console: ConsoleSession | None,
    template: str,
    context: dict[str, Any],
    status_code: int = 200,
    session: AsyncSession | None = None,
) -> HTMLResponse:
    """A page with the frame's needs: who is signed in, the token, the bell's count (read in
    the request's own session when the route has one)."""
    unread = 0
    if console is not None and session is not None:
        unread = (await notifications_api.unread_count(console.user, session)).unread
    elif console is not None:
        runtime: Runtime = request.app.state.runtime
        async with runtime.db.session() as own:
            unread = (await notifications_api.unread_count(console.user, own)).unread
    return templates.TemplateResponse(
        request,
        template,
        {"console": console, "unread": unread, "path": request.url.path, **context},
        status_code=status_code,
    )


def _problem(exc: Exception) -> str:
    """What went wrong, in words a person can act on."""
    if isinstance(exc, ApiError):
        return exc.message
    return f"the server could not load this ({type(exc).__name__})"


def _local_key(runtime: Runtime, request: Request) -> str | None:
    """The local admin's key, offered on the embedded default to a browser on this machine."""
    if not runtime.urls.is_sqlite or request.client is None:
        return None
    try:
        if not ipaddress.ip_address(request.client.host).is_loopback:
            return None
    except ValueError:
        return None
    path = runtime.settings.data_dir / KEY_FILE
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _local_path(target: str) -> str:
    """Where to go after signing in: a path on this server only (no open redirect; browsers
    read `/\\host` as `//host`)."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


# Sign-in and out -----------------------------------------------------------------------------


@router.get("/signin", response_class=HTMLResponse)
async def signin_page(
    request: Request, runtime: RuntimeDep, next: str = "/", error: str | None = None
) -> HTMLResponse:
    # Sign-in CSRF: a random token in a cookie and in the form (double submit), since there is
    # no session yet to tie it to.
    token = request.cookies.get(SIGNIN_COOKIE) or secrets.token_urlsafe(24)
    response = await _page(
        request,
        None,
        "signin.html",
        {
            "signin_token": token,
            "next": _local_path(next),
            "error": error,
            "local": _local_key(runtime, request) is not None,
        },
        status_code=401 if error else 200,
    )
    response.set_cookie(
        SIGNIN_COOKIE, token, httponly=True, samesite="strict", secure=is_https(request, "")
    )
    return response


@router.post("/signin", response_model=None)
async def signin(
    request: Request,
    runtime: RuntimeDep,
    session: SessionDep,
    signin_token: Annotated[str, Form()] = "",
    api_key: Annotated[str, Form()] = "",
    local: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    expected = request.cookies.get(SIGNIN_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, signin_token):
        return await signin_page(
            request, runtime, next, "the sign-in form expired; please try again"
        )
    raw = _local_key(runtime, request) if local else api_key.strip()
    user = await users.authenticate(session, raw) if raw else None
    if raw is None or user is None:
        return await signin_page(
            request, runtime, next, "that API key is not valid (or was revoked)"
        )
    key = await session.scalar(select(ApiKey).where(ApiKey.key_hash == users.hash_key(raw)))
    assert key is not None
    target = _local_path(next)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        cookie_value(key),
        max_age=LIFETIME_S,
        httponly=True,
        samesite="lax",
        secure=is_https(request, runtime.public_url),
    )
    response.delete_cookie(SIGNIN_COOKIE)
    return response


@router.post("/signout")
async def signout(_console: CsrfConsole) -> RedirectResponse:
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    return response


# Integrations ---------------------------------------------------------------------------------


async def _integrations(request: Request, runtime: Runtime) -> list[dict[str, Any]]:
    providers = runtime.providers
    sandbox: Sandbox | None = request.app.state.sandbox
    rows = []
    for row in await integration_status(runtime):
        policy = providers.policies.get(row.provider) if providers else None
        windows = policy.limiter.windows if policy else []
        faults = sandbox.control[row.provider].faults if sandbox else None
        rows.append(
            {
                **row.model_dump(),
                "base_url": runtime.settings.base_url(Provider(row.provider), runtime.public_url),
                "limits": [f"{w.limit} {_period(w.period_s)}" for w in windows],
                "calls": providers.stats.last_calls(row.provider)[:8] if providers else [],
                "faults": _active_faults(faults) if faults and row.mode == "sandbox" else None,
            }
        )
    return rows


def _active_faults(faults: Faults) -> dict[str, Any]:
    """The settings that differ from a well-behaved provider's."""
    defaults = Faults()
    return {
        name: value
        for name, value in faults.model_dump().items()
        if value != getattr(defaults, name)
    }


@router.get("/", response_class=HTMLResponse)
async def integrations_page(
    request: Request, console: Console, runtime: RuntimeDep, session: SessionDep
) -> Response:
    try:
        providers, problem = await _integrations(request, runtime), None
    except Exception as exc:  # the page says why and how to retry
        providers, problem = [], _problem(exc)
    return await _page(
        request,
        console,
        "integrations.html",
        {
            "providers": providers,
            "problem": problem,
            "database": "SQLite" if runtime.urls.is_sqlite else "PostgreSQL",
            "redis": bool(runtime.settings.redis_url),
            "sandbox": runtime.settings.sandbox_mounted,
        },
        session=session,
    )


@router.get("/integrations/table", response_class=HTMLResponse)
async def integrations_table(request: Request, console: Console, runtime: RuntimeDep) -> Response:
    """The live part of the page, polled by htmx."""
    try:
        providers, problem = await _integrations(request, runtime), None
    except Exception as exc:
        providers, problem = [], _problem(exc)
    return templates.TemplateResponse(
        request,
        "_integrations_table.html",
        {"providers": providers, "problem": problem, "console": console},
    )


@router.get("/integrations/series")
async def integrations_series(_console: Console, runtime: RuntimeDep) -> JSONResponse:
    """The charts' points: per provider, per minute of the last hour."""
    providers = runtime.providers
    out: dict[str, dict[str, list[float]]] = {}
    for provider in Provider:
        minutes = providers.stats.series(provider.value) if providers else []
        out[provider.value] = {
            "t": [m.at for m in minutes],
            "p50": [m.p50_ms for m in minutes],
            "p95": [m.p95_ms for m in minutes],
            "errors": [round(m.error_rate * 100, 1) for m in minutes],
        }
    return JSONResponse(out)


# Search ---------------------------------------------------------------------------------------


@router.get("/search", response_class=HTMLResponse)
async def search_page(request: Request, console: Console, session: SessionDep) -> Response:
    return await _page(request, console, "search.html", {}, session=session)


@router.post("/search", response_class=HTMLResponse)
async def search(
    request: Request,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    domain: Annotated[str, Form()] = "",
    titles: Annotated[str, Form()] = "",
    refresh: Annotated[str, Form()] = "",
) -> Response:
    body: dict[str, Any] = {
        "domain": domain,
        "titles": [t.strip() for t in titles.split(",") if t.strip()],
    }
    if refresh and "refresh" in SearchRequest.model_fields:
        body["refresh"] = True
    try:
        query = SearchRequest.model_validate(body)
        waterfall = await search_api.get_waterfall(runtime)
        result = await search_api.search_contacts(query, console.user, session, runtime, waterfall)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fragment(request, "_error.html", {"problem": problems, "retry": False}, 422)
    except ApiError as exc:
        attempts = (exc.details or {}).get("attempts", []) if isinstance(exc.details, dict) else []
        return _fragment(
            request,
            "_search_results.html",
            {"problem": exc.message, "attempts": attempts, "result": None},
            exc.status_code,
        )
    return _fragment(
        request,
        "_search_results.html",
        {"result": result, "attempts": [a.model_dump() for a in result.attempts]},
    )


@router.post("/search/enrich", response_class=HTMLResponse)
async def enrich(
    request: Request,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    first_name: Annotated[str, Form()] = "",
    last_name: Annotated[str, Form()] = "",
    domain: Annotated[str, Form()] = "",
) -> Response:
    """One person's email, as `POST /api/v1/contacts/enrich` finds it."""
    try:
        query = EnrichRequest.model_validate(
            {"first_name": first_name, "last_name": last_name, "domain": domain}
        )
        waterfall = await search_api.get_waterfall(runtime)
        found = await search_api.enrich_contact(query, console.user, session, runtime, waterfall)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _fragment(request, "_enriched.html", {"problem": problems}, 422)
    except ApiError as exc:
        return _fragment(request, "_enriched.html", {"problem": exc.message}, exc.status_code)
    return _fragment(request, "_enriched.html", {"found": found})


def _fragment(
    request: Request, template: str, context: dict[str, Any], status_code: int = 200
) -> HTMLResponse:
    return templates.TemplateResponse(request, template, context, status_code=status_code)


# Jobs -----------------------------------------------------------------------------------------


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    try:
        page = await jobs_api.list_jobs(console.user, session, runtime, None, 20, cursor)
        context: dict[str, Any] = {"jobs": page.jobs, "next_cursor": page.next_cursor}
    except Exception as exc:
        context = {"jobs": [], "next_cursor": None, "problem": _problem(exc)}
    return await _page(request, console, "jobs.html", context, session=session)


@router.post("/jobs", response_model=None)
async def upload(request: Request, console: CsrfConsole, runtime: RuntimeDep) -> Response:
    """The CSV goes to the API's own job creation, as `POST /api/v1/enrichment-jobs` would."""
    try:
        accepted = await jobs_api.create_job(request, console.user, runtime, None)
    except ApiError as exc:
        return _fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    job = json.loads(bytes(accepted.body))
    target = f"/jobs/{job['id']}?started=1"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: str,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    started: int = 0,
) -> Response:
    try:
        job = await jobs_api.get_job(job_id, console.user, session, runtime)
        results = await jobs_api.job_results(
            job_id, console.user, session, "application/json", JOB_ROWS_SHOWN
        )
    except ApiError as exc:
        status_code = exc.status_code
        return await _page(
            request,
            console,
            "job.html",
            {"job": None, "problem": exc.message, "not_found": status_code == 404},
            status_code,
            session,
        )
    rows = json.loads(bytes(results.body))["results"]
    more_rows = max(0, job.total - len(rows))
    return await _page(
        request,
        console,
        "job.html",
        {
            "job": job,
            "rows": rows,
            "more_rows": more_rows,
            "started": started,
        },
        session=session,
    )


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, console: Console, runtime: RuntimeDep) -> Response:
    """The API's server-sent events, for the page's progress."""
    return await jobs_api.job_events(job_id, console.user, runtime)


@router.get("/jobs/{job_id}/results.csv")
async def job_csv(job_id: str, console: Console, session: SessionDep) -> Response:
    return await jobs_api.job_results(job_id, console.user, session, "text/csv", None, None)


@router.post("/jobs/{job_id}/cancel", response_model=None)
async def cancel(
    request: Request, job_id: str, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    try:
        await jobs_api.cancel_job(job_id, console.user, runtime)
    except ApiError as exc:
        return _fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    target = f"/jobs/{quote(job_id)}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# Notifications --------------------------------------------------------------------------------


@router.get("/notifications", response_class=HTMLResponse)
async def notifications_page(request: Request, console: Console, session: SessionDep) -> Response:
    try:
        rows, problem = await notifications_api.notifications(console.user, session), None
    except Exception as exc:
        rows, problem = [], _problem(exc)
    return await _page(
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
        return await _page(
            request, console, "notifications.html", {"notifications": [], "problem": exc.message}
        )
    job_id = note.data.get("id") if note.kind.startswith("enrichment") else None
    target = f"/jobs/{quote(str(job_id))}" if job_id else "/notifications"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


@router.get("/notifications/bell", response_class=HTMLResponse)
async def bell(request: Request, console: Console, session: SessionDep) -> Response:
    unread = (await notifications_api.unread_count(console.user, session)).unread
    return _fragment(request, "_bell.html", {"unread": unread})


# Webhook log (admin) --------------------------------------------------------------------------


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
        events, counts, problem = [], {}, _problem(exc) if isinstance(exc, ApiError) else str(exc)
    template = "_webhook_rows.html" if request.headers.get("hx-request") else "webhooks.html"
    context = {
        "events": events,
        "counts": counts,
        "form": form,
        "problem": problem,
        "next_before": events[-1].id if len(events) == EVENTS_SHOWN else None,
    }
    if template.startswith("_"):
        return _fragment(request, template, {"console": console, **context})
    return await _page(request, console, template, context, session=session)


@router.get("/admin/webhooks/{event_pk}", response_class=HTMLResponse)
async def webhook_page(
    request: Request, event_pk: int, console: AdminConsole, session: SessionDep
) -> Response:
    try:
        event, problem = await webhooks_api.get_event(event_pk, console.user, session), None
    except ApiError as exc:
        event, problem = None, exc.message
    return await _page(
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
        return _fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    target = f"/admin/webhooks/{event_pk}?replayed=1"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": target})
    return RedirectResponse(target, status_code=303)


# Wiring ---------------------------------------------------------------------------------------


def install(app: FastAPI) -> None:
    """The console's routes and what its session errors become: pages, not JSON."""
    app.include_router(router)

    async def sign_in(request: Request, _exc: Exception) -> Response:
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": "/signin"})
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/signin?next={quote(target)}", status_code=303)

    async def forbidden(request: Request, exc: Exception) -> Response:
        message = (
            "this page is for admins only"
            if isinstance(exc, AdminRequired)
            else "the form was stale or came from another site (CSRF check); reload and retry"
        )
        runtime: Runtime = request.app.state.runtime
        async with runtime.db.session() as session:
            console = await read_session(request, session)
        return await _page(
            request, console, "error.html", {"problem": message, "title": "Not allowed"}, 403
        )

    app.add_exception_handler(SignInRequired, sign_in)
    app.add_exception_handler(AdminRequired, forbidden)
    app.add_exception_handler(CsrfFailed, forbidden)
