"""The FastAPI application: wiring only."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roleferry import __version__
from roleferry.api import health
from roleferry.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from roleferry.config import Settings
from roleferry.enrichment import routes as enrichment_routes
from roleferry.errors import install_error_handlers
from roleferry.monitoring import routes as monitoring_routes
from roleferry.notifications import routes as notification_routes
from roleferry.outreach import inbound, unsubscribe
from roleferry.outreach import routes as outreach_routes
from roleferry.runtime import Runtime
from roleferry.sandbox.app import Sandbox, build_sandbox_app
from roleferry.search import routes as search_routes
from roleferry.users import routes as user_routes
from roleferry.web import routes as web_routes
from roleferry.webhooks import routes as webhook_routes
from roleferry.webhooks.routes import count_refused_webhook


def create_app(runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(Settings())
    settings = runtime.settings
    sandbox = (
        Sandbox(settings.sandbox_seed, runtime.public_url, settings.sandbox_faults)
        if settings.sandbox_mounted
        else None
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        if sandbox is not None:
            await sandbox.start()
        # What start-up built (the sandbox world, routes, models, SDKs) lives as long as the
        # app: frozen, it is no longer walked by every full collection, which took up to
        # 110 ms and set the webhook acknowledgement p99 (docs/performance.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            if sandbox is not None:
                await sandbox.stop()
            await runtime.stop()

    app = FastAPI(
        title="RoleFerry Integrations",
        version=__version__,
        lifespan=lifespan,
        description="Contact search, bulk enrichment, outreach and payments over third-party "
        "providers, with webhooks verified and applied exactly once.",
    )
    app.state.runtime = runtime
    app.state.sandbox = sandbox
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        default=settings.max_body_bytes,
        limits={
            "/webhooks/": settings.webhook_max_body_bytes,
            "/api/v1/enrichment-jobs": enrichment_routes.MAX_UPLOAD_BYTES,
        },
        on_refused=count_refused_webhook,
    )
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router)
    app.include_router(user_routes.router)
    app.include_router(search_routes.router)
    app.include_router(monitoring_routes.router)
    app.include_router(webhook_routes.router)
    app.include_router(enrichment_routes.router)
    app.include_router(notification_routes.router)
    app.include_router(outreach_routes.router)
    app.include_router(unsubscribe.router)
    app.include_router(inbound.router)
    app.include_router(webhook_routes.admin)
    app.include_router(web_routes.router)
    if settings.bench_routes:
        app.add_api_route("/_bench/bare", health.bare, methods=["POST"], include_in_schema=False)
    if sandbox is not None:
        app.mount("/sandbox", build_sandbox_app(sandbox))
    return app
