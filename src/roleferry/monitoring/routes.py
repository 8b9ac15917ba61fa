"""How each provider is doing, for people: `GET /api/v1/integrations`."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from roleferry.api.deps import CurrentUser, RuntimeDep
from roleferry.providers.catalog import SPECS
from roleferry.runtime import Runtime

router = APIRouter(prefix="/api/v1", tags=["monitoring"])


class IntegrationOut(BaseModel):
    provider: str
    capabilities: list[str] = Field(description="What the app uses it for, from its spec.")
    mode: str = Field(description="live or sandbox")
    circuit: str | None = Field(description="closed, half_open or open")
    budget_left: int | None = Field(description="Calls left in the tightest rate window.")
    calls_5m: int
    error_rate_5m: float | None
    p50_ms_5m: float | None
    p95_ms_5m: float | None


async def integration_status(runtime: Runtime) -> list[IntegrationOut]:
    """Each provider now: what the JSON route answers and the dashboard shows."""
    rows = []
    providers = runtime.providers
    for spec in SPECS:
        policy = providers.policies.get(spec.name) if providers else None
        recent = runtime.integration_stats.recent(spec.name) if providers else None
        rows.append(
            IntegrationOut(
                provider=spec.name,
                capabilities=sorted(spec.capabilities),
                mode="live" if runtime.settings.is_live(spec.name) else "sandbox",
                circuit=(await policy.breaker.state()).name.lower() if policy else None,
                budget_left=await policy.limiter.remaining() if policy else None,
                calls_5m=recent.calls if recent else 0,
                error_rate_5m=recent.error_rate if recent else None,
                p50_ms_5m=recent.p50_ms if recent else None,
                p95_ms_5m=recent.p95_ms if recent else None,
            )
        )
    return rows


@router.get("/integrations")
async def integrations(_user: CurrentUser, runtime: RuntimeDep) -> list[IntegrationOut]:
    return await integration_status(runtime)
