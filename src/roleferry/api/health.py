"""Liveness, readiness and metrics: unauthenticated, for load balancers and Prometheus."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from roleferry.api.deps import RuntimeDep
from roleferry.errors import ServiceUnavailable
from roleferry.monitoring import metrics as prometheus

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up and serving."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(runtime: RuntimeDep) -> dict[str, str]:
    """The database answers and DBOS is launched: this process can take work."""
    try:
        checks = await runtime.ready()
    except Exception as exc:
        raise ServiceUnavailable(
            "the database is unreachable", details={"error_type": type(exc).__name__}
        ) from exc
    if checks["dbos"] != "launched":
        raise ServiceUnavailable("durable execution (DBOS) is not launched", details=checks)
    return {"status": "ready", **checks}


async def bare(request: Request) -> Response:
    """Reads the body and answers 200: what a route costs with no work, for benchmarks."""
    await request.body()
    return Response(b'{"ok":true}', media_type="application/json")


@router.get("/metrics", include_in_schema=False)
async def metrics() -> Response:
    return Response(prometheus.exposition(), media_type=prometheus.CONTENT_TYPE)
