"""The FastAPI application: wiring only."""

from __future__ import annotations

import asyncio
import gc
import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roleferry import __version__
from roleferry.api import health
from roleferry.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from roleferry.config import Settings
from roleferry.drafting import routes as draft_routes
from roleferry.enrichment import routes as enrichment_routes
from roleferry.errors import (
    AUTHENTICATED_ERRORS,
    PUBLIC_ERRORS,
    documented_errors,
    install_error_handlers,
)
from roleferry.monitoring import routes as monitoring_routes
from roleferry.notifications import routes as notification_routes
from roleferry.outreach import inbound, unsubscribe
from roleferry.outreach import routes as outreach_routes
from roleferry.payments import routes as payment_routes
from roleferry.payments.schedule import ReconcileSchedule
from roleferry.runtime import Runtime
from roleferry.sandbox.app import Sandbox, build_sandbox_app
from roleferry.search import routes as search_routes
from roleferry.users import routes as user_routes
from roleferry.web import api_docs
from roleferry.web import routes as web_routes
from roleferry.webhooks import routes as webhook_routes
from roleferry.webhooks.routes import count_refused_webhook


def create_app(runtime: Runtime | None = None) -> FastAPI:
    runtime = runtime or Runtime(Settings())
    settings = runtime.settings
    sandbox = (
        Sandbox.for_settings(
            settings,
            runtime.public_url,
            listen_host=runtime.listen_host,
            # Late-bound, so that a resolver swapped on the runtime (tests) applies here too.
            resolver=lambda host, port: runtime.resolver(host, port),
        )
        if settings.sandbox_mounted
        else None
    )

    reconciler = ReconcileSchedule(runtime)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        reconciler.start()
        if sandbox is not None:
            await sandbox.start()
        # The Anthropic SDK takes seconds to import (ten under load): imported beside serving,
        # so that the first drafts do not wait for it.
        sdk_import = asyncio.create_task(asyncio.to_thread(importlib.import_module, "anthropic"))
        # What start-up built (the sandbox world, routes, models, SDKs) lives as long as the
        # app: frozen, it is no longer walked by every full collection, which took up to
        # 110 ms and set the webhook acknowledgement p99 (docs/performance.md).
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            await sdk_import
            gc.unfreeze()
            await reconciler.stop()
            if sandbox is not None:
                await sandbox.stop()
            await runtime.stop()

    app = FastAPI(
        title="RoleFerry Integrations",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        description="Contact search and bulk enrichment over third-party providers, and "
        "SendGrid's and Stripe's webhooks, verified and applied exactly once.",
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
            "/jobs": enrichment_routes.MAX_UPLOAD_BYTES,  # the console's upload
        },
        on_refused=count_refused_webhook,
    )
    app.add_middleware(RequestContextMiddleware)
    app.include_router(health.router, responses=documented_errors(PUBLIC_ERRORS))
    for router in (
        user_routes.router,
        search_routes.router,
        monitoring_routes.router,
        webhook_routes.router,
        enrichment_routes.router,
        notification_routes.router,
        payment_routes.router,
        draft_routes.router,
        outreach_routes.router,
        webhook_routes.admin,
    ):
        app.include_router(router, responses=documented_errors(AUTHENTICATED_ERRORS))
    app.include_router(unsubscribe.router, responses=documented_errors((*PUBLIC_ERRORS, 404)))
    app.include_router(inbound.router, responses=documented_errors(AUTHENTICATED_ERRORS))
    web_routes.install(app)
    api_docs.install(app)
    if settings.bench_routes:
        app.add_api_route("/_bench/bare", health.bare, methods=["POST"], include_in_schema=False)
    if sandbox is not None:
        app.mount("/sandbox", build_sandbox_app(sandbox))
    return app
