"""Bulk enrichment jobs: 202 Accepted and a job to follow, by polling, by server-sent events,
by notification or by a signed callback."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Header, Query, Request, status
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, TypeAdapter, ValidationError
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.csv_export import write_csv
from roleferry.enrichment import bulk, intake, service, workflows
from roleferry.enrichment.models import TERMINAL, EnrichmentItem, EnrichmentJob
from roleferry.errors import BadRequest, Unprocessable
from roleferry.notifications.callbacks import UnsafeCallback, check_url

router = APIRouter(prefix="/api/v1/enrichment-jobs", tags=["enrichment"])
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
_FEED_BYTES = 64 * 1024  # parsed per worker-thread hop


class JobAccepted(BaseModel):
    id: str
    status: str
    total: int
    rejected: list[dict[str, Any]] = Field(description="Rows left out: line, field, reason.")


class WaitingFor(BaseModel):
    reason: str = Field(description="What the job waits for, in words.")
    until: UtcDateTime | None = Field(description="When that wait ends, if known.")
    provider: str | None = Field(
        None, description="The unavailable provider its next contact waits for, if that is it."
    )


class JobSummary(BaseModel):
    id: str
    status: str = Field(
        description="queued, running, succeeded, partially_succeeded, failed or cancelled."
    )
    reason: str | None = Field(description="Why the job failed as a whole, if it did.")
    total: int
    done: int
    found: int
    not_found: int
    failed: int
    cancelled: int
    pending: int
    by_provider: dict[str, int]
    by_verification: dict[str, int] = Field(
        description="Found emails by verification: verified, pattern, unverified."
    )
    provider_calls: int
    verify_patterns: bool
    max_wait_s: float = Field(
        description="How long a contact may wait for an unavailable provider, in seconds."
    )
    created_at: UtcDateTime
    started_at: UtcDateTime | None
    finished_at: UtcDateTime | None
    estimated_completion: UtcDateTime | None = Field(
        description="While running: when the pending contacts should be done."
    )
    waiting_for: WaitingFor | None = Field(description="While not over: what it waits for.")
    callback_url: str | None


class JobOut(JobSummary):
    rejected: list[dict[str, Any]]


class JobPage(BaseModel):
    jobs: list[JobSummary] = Field(description="Newest first.")
    next_cursor: str | None = Field(
        description="Pass as `cursor` for the next page; null on the last page."
    )


MaxWait = Annotated[
    float,
    Field(
        ge=0,
        le=3600,
        description="How long a contact may wait for an unavailable provider before the job "
        "goes on without it, in seconds.",
    ),
]
_MAX_WAIT: TypeAdapter[float] = TypeAdapter(MaxWait)


def _max_wait_s(value: object) -> float | None:
    if value is None or value == "":
        return None
    try:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number of seconds")
        return _MAX_WAIT.validate_python(value)
    except (ValueError, ValidationError) as exc:
        raise Unprocessable(
            "max_wait_s must be a number of seconds from 0 to 3600",
            details={"field": "max_wait_s"},
        ) from exc


def _verify_patterns(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise Unprocessable(
        "verify_patterns must be true or false", details={"field": "verify_patterns"}
    )


async def _read_request(request: Request, max_wait_s: float | None) -> service.JobRequest:
    """The upload, parsed as it streams in and in a worker thread (see intake)."""
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith("multipart/form-data"):
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise Unprocessable("send the CSV as a multipart file field named `file`")
            await upload.seek(0)
            parsed = await anyio.to_thread.run_sync(intake.from_csv, upload.file)
            callback = form.get("callback_url")
            verify = form.get("verify_patterns") or False
            wait = form.get("max_wait_s")
        else:
            parsed = await _read_json(request)
            callback = parsed.fields.get("callback_url")
            verify = parsed.fields.get("verify_patterns", False)
            wait = parsed.fields.get("max_wait_s")
        if callback is not None and not isinstance(callback, str):
            raise Unprocessable("callback_url must be a URL string")
        waits = _max_wait_s(wait)
        if waits is not None and max_wait_s is not None and waits != max_wait_s:
            raise Unprocessable(
                "max_wait_s differs between the query and the body: send it once",
                details={"field": "max_wait_s"},
            )
        return service.JobRequest(
            parsed.rows,
            parsed.rejected,
            callback or None,
            _verify_patterns(verify),
            max_wait_s if waits is None else waits,
        )
    except intake.IntakeError as exc:
        raise Unprocessable(str(exc), details={"rejected": exc.rejected}) from exc


async def _read_json(request: Request) -> intake.Upload:
    parser = intake.JsonUpload()
    pending = bytearray()
    stream = request.stream()
    try:
        async for chunk in stream:
            pending += chunk
            if len(pending) >= _FEED_BYTES:
                await anyio.to_thread.run_sync(parser.feed, bytes(pending))
                pending.clear()
        await anyio.to_thread.run_sync(parser.feed, bytes(pending))
        return await anyio.to_thread.run_sync(parser.finish)
    except intake.IntakeError:
        # Refused before the end: the rest is read (not parsed) so that the client, still
        # sending, gets the answer rather than a reset connection.
        async for _ in stream:
            pass
        raise


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobAccepted,
    openapi_extra={"requestBody": intake.REQUEST_BODY},
)
async def create_job(
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
    idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    max_wait_s: Annotated[MaxWait | None, Query()] = None,
) -> JSONResponse:
    """Queues contacts to enrich (JSON, or a CSV upload of up to 10,000 rows). The same
    Idempotency-Key with the same contacts answers the same job, and starts it if an earlier
    attempt saved it but did not get to start it."""
    job_request = await _read_request(request, max_wait_s)
    if job_request.callback_url:
        try:
            await check_url(runtime, job_request.callback_url)
        except UnsafeCallback as exc:
            raise Unprocessable(str(exc), details={"field": "callback_url"}) from exc
    job, _created = await service.create(runtime.db, user.id, job_request, idempotency_key)
    await workflows.enqueue(job.id, user.id)
    body = JobAccepted(id=job.id, status=job.status, total=job.total, rejected=job.rejected)
    return JSONResponse(
        body.model_dump(),
        status_code=202,
        headers={"Location": f"/api/v1/enrichment-jobs/{job.id}"},
    )


async def _describe(session: Any, jobs: list[EnrichmentJob], now: float) -> list[JobOut]:
    tallies = await service.counts(session, [j.id for j in jobs])
    running: dict[str, list[str]] = {}
    out = []
    for job in jobs:
        tally = tallies[job.id]
        if job.status == "queued" and job.user_id not in running:
            running[job.user_id] = await service.running_jobs(session, job.user_id)
        eta = service.estimated_completion(job, tally, now)
        provider_wait = None
        if job.status == "running":
            provider_wait = await bulk.waiting(session, job.id, now)
        waits = service.waiting_for(job, tally, running.get(job.user_id, []), now, provider_wait)
        out.append(
            JobOut(
                id=job.id,
                status=job.status,
                reason=job.reason,
                total=job.total,
                done=tally["done"],
                found=tally["found"],
                not_found=tally["not_found"],
                failed=tally["failed"],
                cancelled=tally["cancelled"],
                pending=job.total - tally["done"],
                by_provider=tally["by_provider"],
                by_verification=tally["by_verification"],
                provider_calls=tally["provider_calls"],
                verify_patterns=job.verify_patterns,
                max_wait_s=bulk.MAX_WAIT_S if job.max_wait_s is None else job.max_wait_s,
                rejected=job.rejected,
                created_at=job.created_at,
                started_at=job.started_at,
                finished_at=job.finished_at,
                estimated_completion=eta,
                waiting_for=WaitingFor.model_validate(waits) if waits else None,
                callback_url=job.callback_url,
            )
        )
    return out


@router.get("")
async def list_jobs(
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
    status: Annotated[
        Literal["queued", "running", "succeeded", "partially_succeeded", "failed", "cancelled"]
        | None,
        Query(description="Only jobs in this state."),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100, description="Jobs per page.")] = 20,
    cursor: Annotated[
        str | None,
        Query(max_length=64, description="The `next_cursor` of the previous page."),
    ] = None,
) -> JobPage:
    """Your enrichment jobs, newest first, a page at a time, with their counts and what each
    one that is not over waits for."""
    jobs, next_cursor = await service.list_jobs(session, user.id, status, limit, cursor)
    described = await _describe(session, jobs, runtime.clock())
    return JobPage(
        jobs=[JobSummary.model_validate(j.model_dump(exclude={"rejected"})) for j in described],
        next_cursor=next_cursor,
    )


@router.get("/{job_id}")
async def get_job(
    job_id: str, user: CurrentUser, session: SessionDep, runtime: RuntimeDep
) -> JobOut:
    job = await service.get(session, user.id, job_id)
    return (await _describe(session, [job], runtime.clock()))[0]


@router.post("/{job_id}/cancel")
async def cancel_job(job_id: str, user: CurrentUser, runtime: RuntimeDep) -> JobOut:
    """Stops a queued or running job: contacts not done yet become `cancelled`, the ones done
    keep their answers, you are notified (and called back, if the job has a callback_url);
    your next job can start at once. A job already over answers 409."""
    summary = await service.cancel(runtime.db, user.id, job_id, runtime.clock())
    bulk.request_stop(job_id)
    if summary["callback_url"]:
        await workflows.start_callback(job_id)
    async with runtime.db.session() as session:
        job = await service.get(session, user.id, job_id)
        return (await _describe(session, [job], runtime.clock()))[0]


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
                out = (await _describe(session, [job], runtime.clock()))[0].model_dump(mode="json")
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
    "verification",
    "reason",
)


@router.get("/{job_id}/results", response_model=None)
async def job_results(
    job_id: str,
    user: CurrentUser,
    session: SessionDep,
    accept: Annotated[str | None, Header()] = None,
    limit: Annotated[
        int | None, Query(ge=1, le=10_000, description="At most this many rows (JSON).")
    ] = None,
    after_line: Annotated[
        int | None, Query(ge=0, description="Page: rows after this CSV line (JSON).")
    ] = None,
) -> Response:
    """Each contact with its email, source, confidence, status and reason, by line; CSV with
    `Accept: text/csv` (always every row), JSON a page at a time with `limit`/`after_line`."""
    await service.get(session, user.id, job_id)
    query = (
        select(EnrichmentItem).where(EnrichmentItem.job_id == job_id).order_by(EnrichmentItem.line)
    )
    csv_wanted = bool(accept and "text/csv" in accept)
    if after_line is not None and not csv_wanted:
        query = query.where(EnrichmentItem.line > after_line)
    if limit is not None and not csv_wanted:
        query = query.limit(limit)
    items = await session.scalars(query)
    rows = [{f: getattr(i, f) for f in RESULT_FIELDS} for i in items]
    if csv_wanted:
        return Response(
            write_csv(RESULT_FIELDS, rows),
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{job_id}.csv"'},
        )
    if accept and "json" not in accept and "*/*" not in accept:
        raise BadRequest("results come as application/json or text/csv")
    return JSONResponse({"id": job_id, "results": rows})
