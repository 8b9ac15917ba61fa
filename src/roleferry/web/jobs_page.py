"""The Jobs pages: upload, the list, one job with live progress, cancel, CSV."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.enrichment import routes as jobs_api
from roleferry.errors import ApiError
from roleferry.web.render import fragment, page, problem_of, redirect_after
from roleferry.web.session import Console, CsrfConsole

JOB_ROWS_SHOWN = 100
router = APIRouter(include_in_schema=False)


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_page(
    request: Request,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    try:
        listed = await jobs_api.list_jobs(console.user, session, runtime, None, 20, cursor)
        context: dict[str, Any] = {"jobs": listed.jobs, "next_cursor": listed.next_cursor}
    except Exception as exc:
        context = {"jobs": [], "next_cursor": None, "problem": problem_of(exc)}
    return await page(request, console, "jobs.html", context, session=session)


@router.post("/jobs", response_model=None)
async def upload(request: Request, console: CsrfConsole, runtime: RuntimeDep) -> Response:
    """The CSV goes to the API's own job creation, as `POST /api/v1/enrichment-jobs` would."""
    try:
        accepted = await jobs_api.create_job(request, console.user, runtime, None)
    except ApiError as exc:
        return fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    job = json.loads(bytes(accepted.body))
    target = f"/jobs/{job['id']}?started=1"
    return redirect_after(request, target)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: str,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    started: int = 0,
) -> Response:
    try:
        job = await jobs_api.get_job(job_id, console.user, session, runtime)
        results = await jobs_api.job_results(
            job_id, console.user, session, "application/json", JOB_ROWS_SHOWN
        )
    except ApiError as exc:
        status_code = exc.status_code
        return await page(
            request,
            console,
            "job.html",
            {"job": None, "problem": exc.message, "not_found": status_code == 404},
            status_code,
            session,
        )
    rows = json.loads(bytes(results.body))["results"]
    more_rows = max(0, job.total - len(rows))
    return await page(
        request,
        console,
        "job.html",
        {
            "job": job,
            "rows": rows,
            "more_rows": more_rows,
            "started": started,
        },
        session=session,
    )


@router.get("/jobs/{job_id}/events")
async def job_events(job_id: str, console: Console, runtime: RuntimeDep) -> Response:
    """The API's server-sent events, for the page's progress."""
    return await jobs_api.job_events(job_id, console.user, runtime)


@router.get("/jobs/{job_id}/results.csv")
async def job_csv(job_id: str, console: Console, session: SessionDep) -> Response:
    return await jobs_api.job_results(job_id, console.user, session, "text/csv", None, None)


@router.post("/jobs/{job_id}/cancel", response_model=None)
async def cancel(
    request: Request, job_id: str, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    try:
        await jobs_api.cancel_job(job_id, console.user, runtime)
    except ApiError as exc:
        return fragment(
            request, "_error.html", {"problem": exc.message, "retry": False}, exc.status_code
        )
    target = f"/jobs/{quote(job_id)}"
    return redirect_after(request, target)
