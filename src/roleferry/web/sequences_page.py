"""The Sequences pages: senders with their caps and state, sequences, enrolling contacts, and
each enrolment's steps and timeline with pause/resume/cancel; through the outreach API's own
route functions."""

from __future__ import annotations

import json
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from roleferry.api.deps import RuntimeDep, SessionDep
from roleferry.enrichment import routes as jobs_api
from roleferry.errors import ApiError
from roleferry.outreach import routes as outreach_api
from roleferry.web.render import fragment, invalid, page, problem_of, redirect_after
from roleferry.web.session import Console, ConsoleSession, CsrfConsole

DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
STEPS_OFFERED = 3
ENROLLMENTS_SHOWN = 100
ENROLL_COLUMNS = ("email", "first_name", "last_name", "company", "title")
router = APIRouter(include_in_schema=False)


def _error(request: Request, problem: str, status_code: int) -> Response:
    return fragment(request, "_error.html", {"problem": problem, "retry": False}, status_code)


def _person(request: Request) -> dict[str, str]:
    """A person from Search's "Enrol" (query parameters), as one CSV row for the enrol box."""
    values = [request.query_params.get(c, "").replace(",", " ")[:320] for c in ENROLL_COLUMNS]
    if not values[0]:
        return {"prefill": "", "person_email": "", "query": ""}
    prefill = ",".join(ENROLL_COLUMNS) + "\n" + ",".join(values) + "\n"
    return {"prefill": prefill, "person_email": values[0], "query": request.url.query}


@router.get("/sequences", response_class=HTMLResponse)
async def sequences_page(
    request: Request, console: Console, session: SessionDep, runtime: RuntimeDep
) -> Response:
    """Senders and sequences; with a person from Search, which sequence to enrol them in."""
    context: dict[str, Any] = {**_person(request), "days": DAYS, "steps_offered": STEPS_OFFERED}
    try:
        context |= {
            "senders": await outreach_api.list_senders(console.user, session),
            "sequences": await outreach_api.list_sequences(console.user, session),
            "problem": None,
        }
    except Exception as exc:
        context |= {"senders": [], "sequences": [], "problem": problem_of(exc)}
    return await page(request, console, "sequences.html", context, session=session)


@router.post("/senders", response_model=None)
async def create_sender(
    request: Request,
    console: CsrfConsole,
    runtime: RuntimeDep,
    email: Annotated[str, Form()] = "",
    name: Annotated[str, Form()] = "",
    daily_cap: Annotated[str, Form()] = "50",
    warmup_start: Annotated[str, Form()] = "10",
    warmup_step: Annotated[str, Form()] = "5",
    min_gap_s: Annotated[str, Form()] = "60",
    jitter_s: Annotated[str, Form()] = "30",
) -> Response:
    """`POST /api/v1/senders`."""
    fields = {
        "email": email,
        "name": name or None,
        "daily_cap": daily_cap,
        "warmup_start": warmup_start,
        "warmup_step": warmup_step,
        "min_gap_s": min_gap_s,
        "jitter_s": jitter_s,
    }
    try:
        body = outreach_api.SenderIn.model_validate(fields)
        await outreach_api.create_sender(body, console.user, runtime)
    except ValidationError as exc:
        return _error(request, invalid(exc), 422)
    except ApiError as exc:
        return _error(request, exc.message, exc.status_code)
    return redirect_after(request, "/sequences")


@router.post("/senders/{sender_id}/{action}", response_model=None)
async def pause_sender(
    request: Request, sender_id: str, action: str, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    """`POST /api/v1/senders/{id}/pause` or `/resume`."""
    try:
        await outreach_api.pause_sender(sender_id, action, console.user, runtime)
    except ApiError as exc:
        return _error(request, exc.message, exc.status_code)
    return redirect_after(request, "/sequences")


class StepProblem(ValueError):
    """A step of the form that cannot be sent to the API, with what to fix."""


STEP_FIELDS = {
    "subject": "the subject",
    "body": "the body",
    "role": "the AI draft's role",
    "about": "the AI draft's line about you",
    "links": "the AI draft's links",
    "tone": "the AI draft's tone",
    "length": "the AI draft's length",
}


def _step(form: Any, n: int) -> dict[str, Any] | None:
    """Step `n` of the form as the API's step (`subject` and `body`, or `ai_draft`), checked
    by the API's own schema; None for a later step left empty."""

    def field(name: str) -> str:
        return str(form.get(f"{name}_{n}", "") or "").strip()

    ai = field("kind") == "ai_draft"
    if n and not field("role" if ai else "subject"):
        return None
    try:
        delay_s = float(field("delay_days") or "0") * 86_400
    except ValueError:
        raise StepProblem("the delay must be a number of days") from None
    step: dict[str, Any] = {"delay_s": delay_s}
    if ai:
        if not field("role"):
            raise StepProblem("give the AI draft a role (the job you are writing about)")
        step["ai_draft"] = {
            "role": field("role"),
            "about": field("about") or None,
            "links": [line.strip() for line in field("links").splitlines() if line.strip()],
            "tone": field("tone") or "friendly",
            "length": field("length") or "120",
        }
    else:
        step |= {"subject": field("subject"), "body": str(form.get(f"body_{n}", ""))}
    try:
        outreach_api.StepIn.model_validate(step)
    except ValidationError as exc:
        raise StepProblem("; ".join(_said(e["loc"], e["msg"]) for e in exc.errors())) from None
    return step


def _said(loc: tuple[Any, ...], message: str) -> str:
    """A schema error in the form's words: the field's label, not its path in the API."""
    message = message.removeprefix("Value error, ")
    named = [STEP_FIELDS[p] for p in reversed(loc) if isinstance(p, str) and p in STEP_FIELDS]
    return f"{named[0]}: {message}" if named else message


@router.post("/sequences", response_model=None)
async def create_sequence(
    request: Request,
    console: CsrfConsole,
    runtime: RuntimeDep,
    name: Annotated[str, Form()] = "",
    sender_id: Annotated[str, Form()] = "",
    timezone: Annotated[str, Form()] = "UTC",
    start_hour: Annotated[str, Form()] = "9",
    end_hour: Annotated[str, Form()] = "17",
) -> Response:
    """`POST /api/v1/sequences` from the form: up to three steps (the later ones when their
    subject, or their AI draft's role, is filled in), the window's days as checkboxes."""
    form = await request.form()
    steps = []
    for n in range(STEPS_OFFERED):
        try:
            step = _step(form, n)
        except StepProblem as exc:
            return _error(request, f"step {n + 1}: {exc}", 422)
        if step is not None:
            steps.append(step)
    fields = {
        "name": name,
        "sender_id": sender_id,
        "steps": steps,
        "window": {
            "days": [int(d) for d in form.getlist("days") if isinstance(d, str) and d.isdigit()],
            "start_hour": start_hour,
            "end_hour": end_hour,
        },
        "timezone": timezone.strip() or "UTC",
    }
    try:
        body = outreach_api.SequenceIn.model_validate(fields)
        made = await outreach_api.create_sequence(body, console.user, runtime)
    except ValidationError as exc:
        return _error(request, invalid(exc), 422)
    except ApiError as exc:
        return _error(request, exc.message, exc.status_code)
    return redirect_after(request, f"/sequences/{quote(made.id)}")


@router.get("/sequences/{sequence_id}", response_class=HTMLResponse)
async def sequence_page(
    request: Request,
    sequence_id: str,
    console: Console,
    session: SessionDep,
    runtime: RuntimeDep,
    run: Annotated[str | None, Query(max_length=32)] = None,
    status: Annotated[str, Query(max_length=16)] = "",
    after: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    try:
        sequence = await outreach_api.get_sequence(sequence_id, console.user, session)
    except ApiError as exc:
        missing = {"sequence": None, "problem": exc.message, "not_found": exc.status_code == 404}
        return await page(request, console, "sequence.html", missing, exc.status_code, session)
    context: dict[str, Any] = {
        **_person(request),
        "sequence": sequence,
        "after": after,
        "days": DAYS,
        **await _enrollments(request, console, session, sequence_id, status, after),
    }
    try:
        context["jobs"] = (
            await jobs_api.list_jobs(console.user, session, runtime, None, 20, None)
        ).jobs
        context["run"] = await outreach_api.get_run(run, console.user, session) if run else None
    except ApiError as exc:
        context |= {"jobs": [], "run": None, "problem": exc.message}
    return await page(request, console, "sequence.html", context, session=session)


async def _enrollments(
    request: Request,
    console: ConsoleSession,
    session: SessionDep,
    sequence_id: str,
    status: str,
    after: str | None,
) -> dict[str, Any]:
    """A page of the sequence's enrolments; `next_after` pages on."""
    try:
        rows = await outreach_api.list_enrollments(
            request,
            console.user,
            session,
            sequence_id=sequence_id,
            status_=status or None,
            after=after,
            limit=ENROLLMENTS_SHOWN,
        )
        more = rows[-1].id if len(rows) == ENROLLMENTS_SHOWN else None
        return {"enrollments": rows, "next_after": more, "status": status, "problem": None}
    except Exception as exc:
        return {"enrollments": [], "problem": problem_of(exc)}


@router.get("/sequences/{sequence_id}/enrollments", response_class=HTMLResponse)
async def enrollments_table(
    request: Request,
    sequence_id: str,
    console: Console,
    session: SessionDep,
    status: Annotated[str, Query(max_length=16)] = "",
    after: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    """The live part of a sequence's page, polled by htmx."""
    context = await _enrollments(request, console, session, sequence_id, status, after)
    return fragment(request, "_enrollments.html", {**context, "path": f"/sequences/{sequence_id}"})


def _as_api_request(request: Request, body: bytes, content_type: str) -> Request:
    """The enrolment as the API takes it (a CSV or JSON body), so its own parsing and rules
    read the console's form: one copy of them."""
    replaced = (b"content-type", b"content-length")
    headers = [(k, v) for k, v in request.scope["headers"] if k not in replaced]
    headers += [(replaced[0], content_type.encode()), (replaced[1], str(len(body)).encode())]

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return Request({**request.scope, "headers": headers}, receive)


@router.post("/sequences/{sequence_id}/enrollments", response_model=None)
async def enroll(
    request: Request,
    sequence_id: str,
    console: CsrfConsole,
    session: SessionDep,
    runtime: RuntimeDep,
    contacts: Annotated[str, Form()] = "",
    file: UploadFile | None = None,
    enrichment_job_id: Annotated[str, Form()] = "",
) -> Response:
    """`POST /api/v1/sequences/{id}/enrollments`: an enrichment job's found contacts, a CSV
    file, or CSV typed in the box."""
    if enrichment_job_id:
        body = json.dumps({"enrichment_job_id": enrichment_job_id}).encode()
        api_request = _as_api_request(request, body, "application/json")
    else:
        data = (await file.read()) if file is not None and file.filename else contacts.encode()
        if not data.strip():
            return _error(request, "give contacts: a CSV with an email column, or a job", 422)
        api_request = _as_api_request(request, data, "text/csv")
    try:
        accepted = await outreach_api.enroll(
            sequence_id, api_request, console.user, session, runtime
        )
    except ApiError as exc:
        return _error(request, exc.message, exc.status_code)
    run = json.loads(bytes(accepted.body))
    return redirect_after(request, f"/sequences/{quote(sequence_id)}?run={quote(run['id'])}")


@router.get("/enrollments/{enrollment_id}", response_class=HTMLResponse)
async def enrollment_page(
    request: Request, enrollment_id: str, console: Console, session: SessionDep
) -> Response:
    try:
        enrollment = await outreach_api.get_enrollment(enrollment_id, console.user, session)
    except ApiError as exc:
        missing = {"enrollment": None, "problem": exc.message, "not_found": exc.status_code == 404}
        return await page(request, console, "enrollment.html", missing, exc.status_code, session)
    context = {"enrollment": enrollment}
    if request.headers.get("hx-request"):
        return fragment(request, "_enrollment.html", {**context, "console": console})
    return await page(request, console, "enrollment.html", context, session=session)


@router.post("/enrollments/{enrollment_id}/{action}", response_model=None)
async def act(
    request: Request, enrollment_id: str, action: str, console: CsrfConsole, runtime: RuntimeDep
) -> Response:
    """`POST /api/v1/enrollments/{id}/pause`, `/resume` or `/cancel`."""
    try:
        await outreach_api.act_on_enrollment(enrollment_id, action, console.user, runtime)
    except ApiError as exc:
        return _error(request, exc.message, exc.status_code)
    return redirect_after(request, f"/enrollments/{quote(enrollment_id)}")
