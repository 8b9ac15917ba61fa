"""The sandbox: every simulated provider, the world's truth and the control plane, as one ASGI
app mounted at `/sandbox` in the main server, or served alone by `roleferry sandbox`."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from roleferry import outbound
from roleferry.background import cancel_and_wait
from roleferry.errors import (
    Conflict,
    NotFound,
    Unprocessable,
    _code_for,
    _describe_validation,
    error_response,
    install_error_handlers,
)
from roleferry.providers.sandbox_credentials import (
    SANDBOX_API_KEYS,
    SANDBOX_STRIPE_WEBHOOK_SECRET,
    public_key_b64,
    sendgrid_signing_key,
)
from roleferry.sandbox import anthropic, apollo, clay, hunter, sendgrid, stripe
from roleferry.sandbox.access import ControlAccess
from roleferry.sandbox.common import ProviderHTTPError, sandbox_of
from roleferry.sandbox.control import (
    PROVIDERS,
    Control,
    ControlMiddleware,
    Faults,
    parse_fault_spec,
)
from roleferry.sandbox.delivery import DeliveryTargets, WebhookSender
from roleferry.sandbox.world import World

if TYPE_CHECKING:
    from roleferry.config import Settings

MODULES: dict[str, Any] = {
    "apollo": apollo,
    "clay": clay,
    "hunter": hunter,
    "sendgrid": sendgrid,
    "anthropic": anthropic,
    "stripe": stripe,
}
ERROR_TYPES: dict[str, type[ProviderHTTPError]] = {
    "apollo": apollo.ApolloError,
    "clay": clay.ClayError,
    "hunter": hunter.HunterError,
    "sendgrid": sendgrid.SendGridError,
    "anthropic": anthropic.AnthropicError,
    "stripe": stripe.StripeError,
}
SENDGRID_HORIZON_S = 24 * 3600
STRIPE_HORIZON_S = 3 * 24 * 3600


class Sandbox:
    """The simulators' shared state: the world, faults and stats, and provider-side data."""

    def __init__(
        self,
        seed: int = 7,
        target_url: str = "http://127.0.0.1:8000",
        faults: Iterable[str] = (),
        *,
        access: ControlAccess | None = None,
        targets: DeliveryTargets | None = None,
    ) -> None:
        self.seed = seed
        self.target_url = target_url.rstrip("/")
        self.access = access or ControlAccess()
        self.targets = targets or DeliveryTargets(self.target_url)
        self.world = World(seed)
        self.control = Control(seed)
        self.api_keys = dict(SANDBOX_API_KEYS)
        signing_key = sendgrid_signing_key(seed)
        self.sendgrid_public_key = public_key_b64(signing_key)
        self.stripe_webhook_secret = SANDBOX_STRIPE_WEBHOOK_SECRET
        self._signing_key = signing_key
        self._startup_faults = list(faults)
        self.sendgrid_sender = WebhookSender(
            "sendgrid",
            duplicate_rate=lambda: self.control["sendgrid"].faults.duplicate_rate,
            max_backoff_s=lambda: self.control["sendgrid"].faults.max_retry_backoff_s,
            horizon_s=SENDGRID_HORIZON_S,
            targets=self.targets,
            seed=seed,
        )
        self.stripe_sender = WebhookSender(
            "stripe",
            duplicate_rate=lambda: self.control["stripe"].faults.duplicate_rate,
            max_backoff_s=lambda: self.control["stripe"].faults.max_retry_backoff_s,
            horizon_s=STRIPE_HORIZON_S,
            targets=self.targets,
            seed=seed + 1,
        )
        self._flusher: asyncio.Task[None] | None = None
        self._clear_state()
        for spec in self._startup_faults:
            try:
                provider, changes = parse_fault_spec(spec)
            except ValueError as exc:
                raise ValueError(f"ROLEFERRY_SANDBOX_FAULTS: {exc}") from None
            self.control.update(provider, changes)

    @classmethod
    def for_settings(
        cls,
        settings: Settings,
        target_url: str,
        *,
        listen_host: str = "127.0.0.1",
        resolver: outbound.Resolver = outbound.system_resolver,
        serves_this_server: bool = True,
    ) -> Sandbox:
        """The sandbox as configured: who may control it, where it may deliver webhooks, and
        (when it serves this server) which providers are live and so not simulated here."""
        from roleferry.config import Provider

        admin_key = settings.sandbox_admin_key
        live = [p.value for p in Provider if settings.is_live(p)] if serves_this_server else []
        return cls(
            settings.sandbox_seed,
            target_url,
            settings.sandbox_faults,
            access=ControlAccess(listen_host, admin_key.get_secret_value() if admin_key else None),
            targets=DeliveryTargets(
                target_url,
                settings.sandbox_webhook_targets,
                outbound.AddressPolicy.of(
                    bool(settings.callback_allow_loopback), settings.callback_allowed_networks
                ),
                resolver,
                live,
            ),
        )

    def _clear_state(self) -> None:
        self.sendgrid = sendgrid.SendGridState(
            self.seed, self._signing_key, f"{self.target_url}/webhooks/sendgrid"
        )
        self.stripe = stripe.StripeState(
            self.stripe_webhook_secret, f"{self.target_url}/webhooks/stripe"
        )
        self.hunter_used = 0
        self.clay_searches: dict[str, tuple[list[dict[str, Any]], int]] = {}

    def reset(self) -> None:
        """Clears faults, counters, limits and provider-side data; the world stays."""
        self.control.reset()
        self.sendgrid_sender.clear()
        self.stripe_sender.clear()
        self._clear_state()

    def stripe_webhook_url(self) -> str:
        return self.control["stripe"].faults.webhook_url or self.stripe.webhook_url

    def sendgrid_webhook_url(self) -> str:
        return self.control["sendgrid"].faults.webhook_url or self.sendgrid.settings.url

    def flush_sendgrid(self, now: float) -> int:
        """Hands the events whose time has come to the sender, in signed batches."""
        faults = self.control["sendgrid"].faults
        batches = self.sendgrid.due_batches(now, faults.reorder_rate)
        if not self.sendgrid.settings.enabled:
            return 0
        url = self.sendgrid_webhook_url()
        for batch in batches:
            self.sendgrid_sender.enqueue(url, json.dumps(batch).encode(), self._sign_sendgrid)
        return sum(len(b) for b in batches)

    def _sign_sendgrid(self, body: bytes) -> dict[str, str]:
        if not self.sendgrid.settings.signed:
            return {}
        return self.sendgrid.sign(body)

    async def start(self) -> None:
        self.access.warn_if_exposed()
        self.sendgrid_sender.start()
        self.stripe_sender.start()
        if self._flusher is None:
            self._flusher = asyncio.create_task(
                self._flush_forever(), name="sandbox-sendgrid-batches"
            )

    async def stop(self) -> None:
        await cancel_and_wait(self._flusher)
        self._flusher = None
        await self.sendgrid_sender.stop()
        await self.stripe_sender.stop()

    async def _flush_forever(self) -> None:
        while True:
            await asyncio.sleep(self.control["sendgrid"].faults.flush_interval_s)
            self.flush_sendgrid(time.time())

    def stats(self) -> dict[str, Any]:
        return {
            "providers": self.control.stats(),
            "webhooks": {
                "sendgrid": self.sendgrid_sender.stats.as_dict(
                    self.sendgrid_sender.pending + len(self.sendgrid.scheduled)
                ),
                "stripe": self.stripe_sender.stats.as_dict(self.stripe_sender.pending),
            },
        }


async def _control_access(request: Request) -> None:
    sandbox_of(request).access.check(request)


def _provider_controls(provider: str) -> Callable[[Request], Awaitable[dict[str, Any]]]:
    async def controls(request: Request) -> dict[str, Any]:
        """GET: the provider's current controls. PUT: changes some, returns them all."""
        sandbox = sandbox_of(request)
        if request.method == "GET":
            return sandbox.control[provider].faults.model_dump()
        return await _set_faults(sandbox, provider, request)

    return controls


async def _set_faults(sandbox: Sandbox, provider: str, request: Request) -> dict[str, Any]:
    if provider in sandbox.targets.live:
        raise Conflict(
            f"{provider} is live on this server (ROLEFERRY_{provider.upper()}_API_KEY is set):"
            " its traffic goes to the real API, so its simulator's controls are locked"
        )
    try:
        changes = json.loads(await request.body() or b"{}")
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, or nested too deep
        raise Unprocessable(f"body is not JSON: {exc}") from exc
    if not isinstance(changes, dict):
        raise Unprocessable("body must be a JSON object of fault settings")
    unknown = sorted(set(changes) - set(Faults.model_fields))
    if unknown:
        allowed = ", ".join(sorted(Faults.model_fields))
        raise Unprocessable(
            f"unknown fault settings: {', '.join(unknown)}; allowed: {allowed}",
            details=[
                {"field": name, "reason": "unknown fault setting", "type": "extra_forbidden"}
                for name in unknown
            ],
        )
    url = changes.get("webhook_url")
    if url is not None:
        refused = sandbox.targets.refusal(provider, str(url))
        if refused is not None:
            raise Unprocessable(
                f"webhook_url: {refused}",
                details=[{"field": "webhook_url", "reason": refused, "type": "value_error"}],
            )
    try:
        faults = sandbox.control.update(provider, changes)
    except ValidationError as exc:
        message, details = _describe_validation(list(exc.errors()))
        raise Unprocessable(message, details=details) from exc
    return faults.model_dump()


def _control_router() -> APIRouter:
    api = APIRouter(
        prefix="/_control", tags=["sandbox control"], dependencies=[Depends(_control_access)]
    )

    @api.get("")
    async def all_faults(request: Request) -> dict[str, Any]:
        sandbox = sandbox_of(request)
        return {name: sandbox.control[name].faults.model_dump() for name in PROVIDERS}

    @api.get("/stats")
    async def stats(request: Request) -> dict[str, Any]:
        return sandbox_of(request).stats()

    @api.post("/reset")
    async def reset(request: Request) -> dict[str, str]:
        sandbox_of(request).reset()
        return {"status": "reset"}

    for name in PROVIDERS:
        # One route per provider with both methods: a wrong method (or /reset read with GET)
        # is then the router's 405 with an Allow header, not an "unknown provider" 404.
        api.add_api_route(
            f"/{name}", _provider_controls(name), methods=["GET", "PUT"], name=f"control_{name}"
        )

    return api


def _world_router() -> APIRouter:
    api = APIRouter(prefix="/_world", tags=["sandbox world"])

    @api.get("")
    async def summary(request: Request) -> dict[str, Any]:
        world = sandbox_of(request).world
        return {"seed": world.seed, "companies": len(world.companies), "people": world.total_people}

    @api.get("/companies")
    async def companies(
        request: Request,
        limit: int = Query(50, ge=1, le=2000),
        offset: int = Query(0, ge=0),
    ) -> dict[str, Any]:
        world = sandbox_of(request).world
        rows = world.companies[offset : offset + limit]
        return {
            "total": len(world.companies),
            "companies": [_company_summary(world, c) for c in rows],
        }

    @api.get("/companies/{domain}")
    async def company(request: Request, domain: str) -> dict[str, Any]:
        world = sandbox_of(request).world
        found = world.company(domain)
        if found is None:
            raise NotFound(f"no company with domain {domain!r} in the sandbox world")
        return {
            **_company_summary(world, found),
            "people": [
                {
                    "id": p.id,
                    "first_name": p.first_name,
                    "last_name": p.last_name,
                    "title": p.title,
                    "seniority": p.seniority,
                    "department": p.department,
                    "linkedin_url": p.linkedin_url,
                    "email": p.email,
                    "bounces": p.bounces,
                    "known_by": world.knowledge(p),
                }
                for p in found.people
            ],
        }

    return api


def _company_summary(world: World, company: Any) -> dict[str, Any]:
    return {
        "id": company.id,
        "name": company.name,
        "domain": company.domain,
        "industry": company.industry,
        "size": company.size,
        "email_pattern": company.email_pattern,
        "known_by": {
            "apollo": world.apollo_knows_company(company),
            "clay": world.clay_knows_company(company),
            "hunter_pattern": world.hunter_knows_pattern(company),
        },
    }


def build_sandbox_app(sandbox: Sandbox) -> FastAPI:
    """The ASGI app to mount at /sandbox: providers answer in their own error shapes."""
    app = FastAPI(title="RoleFerry sandbox", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.sandbox = sandbox
    install_error_handlers(app)
    for name, module in MODULES.items():
        sandbox.control.error_renderers[name] = module.render_error
        app.include_router(module.router())
    app.include_router(_control_router())
    app.include_router(sendgrid.control_router())
    app.include_router(_world_router())

    @app.exception_handler(ProviderHTTPError)
    async def _provider_error(_request: Request, exc: ProviderHTTPError) -> JSONResponse:
        response: JSONResponse = MODULES[exc.provider].error_response(exc)
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _unknown_route(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        provider = path.lstrip("/").split("/", 1)[0]
        if provider not in MODULES:
            headers = dict(exc.headers) if exc.headers else None
            message = str(exc.detail)
            if exc.status_code == 405:
                message = f"{request.method} is not allowed on {path}"
            elif exc.status_code == 404 and path.startswith("/_control/"):
                message = (
                    f"no control at {path}: use /_control, /_control/stats, /_control/reset or "
                    f"/_control/<provider> with a provider of {', '.join(PROVIDERS)}"
                )
            return error_response(
                exc.status_code, _code_for(exc.status_code), message, headers=headers
            )
        error = ERROR_TYPES[provider](
            exc.status_code, f"Unrecognized request URL ({request.method}: {path})"
        )
        response: JSONResponse = MODULES[provider].error_response(error)
        return response

    app.add_middleware(ControlMiddleware, control=sandbox.control)
    return app


def standalone_app(sandbox: Sandbox) -> FastAPI:
    """`roleferry sandbox`: the sandbox alone, still under /sandbox so base URLs look the same."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await sandbox.start()
        try:
            yield
        finally:
            await sandbox.stop()

    root = FastAPI(title="RoleFerry sandbox", lifespan=lifespan)
    install_error_handlers(root)

    @root.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    root.mount("/sandbox", build_sandbox_app(sandbox))
    return root
