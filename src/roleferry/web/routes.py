"""The dashboard: a server-rendered page of what this deployment talks to."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from roleferry.api.deps import RuntimeDep
from roleferry.monitoring.routes import integration_status

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
async def dashboard(request: Request, runtime: RuntimeDep) -> HTMLResponse:
    settings = runtime.settings
    providers = [
        {
            **row.model_dump(),
            "base_url": settings.base_url(row.provider, runtime.public_url),
        }
        for row in await integration_status(runtime)
    ]
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
