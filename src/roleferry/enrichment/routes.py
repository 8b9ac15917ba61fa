"""Bulk enrichment jobs: 202 Accepted and a job to follow, by polling, by server-sent events,
by notification or by a signed callback."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.enrichment import bulk, intake, service, workflows
from roleferry.enrichment.models import TERMINAL, EnrichmentItem, EnrichmentJob
from roleferry.errors import BadRequest, Unprocessable
from roleferry.notifications.callbacks import UnsafeCallback, check_url

router = APIRouter(prefix="/api/v1/enrichment-jobs", tags=["enrichment"])
MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class JobAccepted(BaseModel):
    id: str
    status: str
    total: int
    rejected: list[dict[str, Any]] = Field(description="Rows left out: line, field, reason.")


class JobOut(BaseModel):
    id: str
    status: str
    total: int
    done: int
    found: int
    not_found: int
    failed: int
    by_provider: dict[str, int]
    provider_calls: int
    credits_used: int
    rejected: list[dict[str, Any]]
    estimated_completion: float | None = Field(description="Unix time, while running.")
    waiting: dict[str, Any] | None = Field(
        None,
        description="While no contact can be worked on: {provider, until (unix s), reason}.",
    )
    created_at: str
    callback_url: str | None


async def _read_request(
    request: Request,
) -> tuple[list[intake.Row], list[dict[str, Any]], str | None]:
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise Unprocessable("send the CSV as a multipart file field named `file`")
            rows, rejected = intake.from_csv(await upload.read())
            callback = form.get("callback_url")
            return rows, rejected, str(callback) if callback else None
        try:
            body = json.loads(await request.body() or b"null")
        except json.JSONDecodeError as exc:
            raise Unprocessable(f"the body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict) or "contacts" not in body:
            raise Unprocessable(
                'send {"contacts": [...], "callback_url"?} as JSON, or a CSV as multipart `file`'
            )
        callback = body.get("callback_url")
        if callback is not None and not isinstance(callback, str):
            raise Unprocessable("callback_url must be a URL string")
        rows, rejected = intake.from_json(body["contacts"])
        return rows, rejected, callback
    except intake.IntakeError as exc:
        raise Unprocessable(str(exc), details={"rejected": exc.rejected}) from exc


@router.post("", status_code=status.HTTP_202_ACCEPTED, response_model=JobAccepted)
async def create_job(
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    max_wait_s: Annotated[
        float,
        Query(
            ge=0,
            le=3600,
            description="How long a contact may wait for an unavailable provider before the "
            "job goes on without it, in seconds.",
        ),
    ] = bulk.MAX_WAIT_S,
) -> JSONResponse:
    """Queues contacts to enrich (JSON, or a CSV upload of up to 10,000 rows)."""
    rows, rejected, callback = await _read_request(request)
    if callback:
        try:
            await check_url(callback, bool(runtime.settings.callback_allow_loopback))
        except UnsafeCallback as exc:
            raise Unprocessable(str(exc), details={"field": "callback_url"}) from exc
    job, created = await service.create(
        runtime.db, user.id, rows, rejected, callback, idempotency_key
    )
    if created:
        await workflows.enqueue(job.id, user.id, max_wait_s)
    body = JobAccepted(id=job.id, status=job.status, total=job.total, rejected=job.rejected)
    return JSONResponse(
        body.model_dump(),
        status_code=202,
        headers={"Location": f"/api/v1/enrichment-jobs/{job.id}"},
    )


async def _job_out(session: Any, job: EnrichmentJob, now: float) -> JobOut:
    tally = await service.counts(session, job.id)
    eta = None
    if job.status == "running" and job.started_at and tally["done"]:
        rate = tally["done"] / max(0.001, now - job.started_at)
        eta = now + tally["pending"] / rate
    return JobOut(
        id=job.id,
        status=job.status,
        total=tally["total"],
        done=tally["done"],
        found=tally["found"],
        not_found=tally["not_found"],
        failed=tally["failed"],
        by_provider=tally["by_provider"],
        provider_calls=tally["provider_calls"],
        credits_used=sum(tally["by_provider"].values()),
        rejected=job.rejected,
        estimated_completion=eta,
        waiting=await bulk.waiting(session, job.id, now) if job.status == "running" else None,
        created_at=job.created_at.isoformat(),
        callback_url=job.callback_url,
    )


@router.get("/{job_id}")
async def get_job(
    job_id: str, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> JobOut:
    return await _job_out(session, await service.get(session, user.id, job_id), runtime.clock())


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, user: CurrentUser, runtime: RuntimeDep) -> JobOut:
    from dbos import DBOS

    job = await service.cancel(runtime.db, user.id, job_id)
    await DBOS.cancel_workflow_async(job.id)
    async with runtime.db.session() as session:
        return await _job_out(session, await service.get(session, user.id, job_id), runtime.clock())


@router.get("/{job_id}/events")
async def job_events(job_id: str, user: CurrentUser, runtime: RuntimeDep) -> StreamingResponse:
    """Server-sent events: `progress` whenever the counts change, then `done`."""
    async with runtime.db.session() as session:
        await service.get(session, user.id, job_id)

    async def stream() -> AsyncIterator[bytes]:
        last = None
        while True:
            async with runtime.db.session() as session:
                job = await service.get(session, user.id, job_id)
                out = (await _job_out(session, job, runtime.clock())).model_dump()
            snapshot = (out["status"], out["done"], out["found"])
            if snapshot != last:
                last = snapshot
                yield f"event: progress\ndata: {json.dumps(out)}\n\n".encode()
            if out["status"] in TERMINAL:
                yield f"event: done\ndata: {json.dumps(out)}\n\n".encode()
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(), media_type="text/event-stream", headers={"cache-control": "no-cache"}
    )


RESULT_FIELDS = (
    "line",
    "first_name",
    "last_name",
    "domain",
    "title",
    "linkedin_url",
    "email",
    "source",
    "confidence",
    "status",
    "reason",
)


@router.get("/{job_id}/results", response_model=None)
async def job_results(
    job_id: str,
    user: CurrentUser,
    session: SessionDep,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Each contact with its email, source, confidence, status and reason; CSV with
    `Accept: text/csv`."""
    await service.get(session, user.id, job_id)
    items = await session.scalars(
        select(EnrichmentItem).where(EnrichmentItem.job_id == job_id).order_by(EnrichmentItem.line)
    )
    rows = [{f: getattr(i, f) for f in RESULT_FIELDS} for i in items]
    if accept and "text/csv" in accept:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=RESULT_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
        return Response(
            buffer.getvalue(),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{job_id}.csv"'},
        )
    if accept and "json" not in accept and "*/*" not in accept:
        raise BadRequest("results come as application/json or text/csv")
    return JSONResponse({"id": job_id, "results": rows})
