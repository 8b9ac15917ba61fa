"""The dashboard: a server-rendered page of what this deployment talks to."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from roleferry.api.deps import RuntimeDep
from roleferry.config import Provider

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    settings = runtime.settings
    providers = []
    for provider in Provider:
        row: dict[str, object] = {
            "name": provider.value,
            "mode": "live" if settings.is_live(provider) else "sandbox",
            "base_url": settings.base_url(provider, runtime.public_url),
            **dict.fromkeys(("circuit", "budget", "calls", "p95", "errors")),
        }
        policy = runtime.providers.policies.get(provider.value) if runtime.providers else None
        if policy is not None and runtime.providers is not None:
            recent = runtime.providers.stats.recent(provider.value)
            row.update(
                circuit=(await policy.breaker.state()).name.lower().replace("_", "-"),
                budget=await policy.limiter.remaining(),
                calls=recent.calls,
                p95=recent.p95_ms,
                errors=recent.error_rate,
            )
        providers.append(row)
    return templates.TemplateResponse(
        request,
        "dashboard.html",
        {
            "providers": providers,
            "database": "SQLite" if runtime.urls.is_sqlite else "PostgreSQL",
            "redis": bool(settings.redis_url),
            "sandbox": settings.sandbox_mounted,
        },
    )
