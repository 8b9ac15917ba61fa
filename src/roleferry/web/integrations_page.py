"""The Integrations page: each provider now, its last hour as charts, sandbox faults."""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.config import Provider
from roleferry.monitoring.routes import integration_status
from roleferry.runtime import Runtime
from roleferry.sandbox.app import Sandbox
from roleferry.sandbox.control import Faults
from roleferry.web.render import fragment, page, problem_of
from roleferry.web.session import Console

PERIODS = {1.0: "second", 60.0: "minute", 3600.0: "hour", 86400.0: "day"}
router = APIRouter(include_in_schema=False)


def _period(seconds: float) -> str:
    return f"per {PERIODS[seconds]}" if seconds in PERIODS else f"per {seconds:g} s"


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
                "calls": runtime.integration_stats.last_calls(row.provider)[:8],
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
    request: Request,
    console: Console,
    runtime: RuntimeDep,
    session: SessionDep,
    checkout: Annotated[str | None, Query(max_length=200)] = None,
) -> Response:
    if checkout:  # Stripe's default success URL is the root: the Credits page confirms it.
        return RedirectResponse(f"/credits?checkout={quote(checkout)}", status_code=303)
    try:
        providers, problem = await _integrations(request, runtime), None
    except Exception as exc:  # the page says why and how to retry
        providers, problem = [], problem_of(exc)
    return await page(
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
        providers, problem = [], problem_of(exc)
    return fragment(
        request,
        "_integrations_table.html",
        {"providers": providers, "problem": problem, "console": console},
    )


@router.get("/integrations/series")
async def integrations_series(_console: Console, runtime: RuntimeDep) -> JSONResponse:
    """The charts' points: per provider, per minute of the last hour."""
    out: dict[str, dict[str, list[float]]] = {}
    for provider in Provider:
        minutes = runtime.integration_stats.series(provider.value)
        out[provider.value] = {
            "t": [m.at for m in minutes],
            "p50": [m.p50_ms for m in minutes],
            "p95": [m.p95_ms for m in minutes],
            "errors": [round(m.error_rate * 100, 1) for m in minutes],
        }
    return JSONResponse(out)
