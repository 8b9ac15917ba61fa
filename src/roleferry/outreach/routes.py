"""Senders, sequences and enrolments: thin routes over `outreach.service`; every resource is
per user (another user's is a 404)."""

from __future__ import annotations

import csv
import io
import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, status
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, EmailStr, Field, field_validator, model_validator
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.api.inputs import NOT_BLANK
from roleferry.api.times import UtcDateTime, iso_z
from roleferry.enrichment.models import EnrichmentItem, EnrichmentJob
from roleferry.errors import Conflict, NotFound, Unprocessable
from roleferry.outreach import service, suppressions
from roleferry.outreach.models import (
    Enrollment,
    Sender,
    SequenceDef,
    SequenceRun,
    SequenceSend,
    TimelineEntry,
)
from roleferry.outreach.windows import valid_zone

router = APIRouter(prefix="/api/v1", tags=["outreach"])
MAX_ENROLL = 10_000


def _iso(at: float | None) -> str | None:
    return None if at is None else iso_z(at)


def iana_zone(value: str) -> str:
    if not valid_zone(value):
        raise ValueError(f"{value!r} is not an IANA time zone, e.g. Europe/Berlin")
    return value


class SenderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr = Field(description="A from-address on a sending domain.")
    name: str | None = Field(None, max_length=200)
    daily_cap: int = Field(50, ge=1, le=10_000)
    warmup_start: int = Field(10, ge=1, le=10_000, description="Sends allowed on day 0.")
    warmup_step: int = Field(5, ge=0, le=10_000, description="More allowed each day after.")
    min_gap_s: float = Field(60.0, ge=0, le=86_400, description="Least time between two sends.")
    jitter_s: float = Field(30.0, ge=0, le=86_400, description="Random extra on top of the gap.")
    timezone: str = Field(
        "UTC", max_length=64, description="IANA zone whose midnight starts the cap's next day."
    )

    _zone = field_validator("timezone")(iana_zone)


class SenderOut(BaseModel):
    id: str
    email: str
    name: str | None
    daily_cap: int
    warmup_start: int
    warmup_step: int
    min_gap_s: float
    jitter_s: float
    timezone: str
    paused: bool
    paused_reason: str | None


class AiDraftIn(BaseModel):
    """What each recipient's draft asks for; the recipient is the enrolled contact."""

    model_config = ConfigDict(extra="forbid")
    role: str = Field(min_length=1, max_length=120, pattern=NOT_BLANK)
    about: str | None = Field(None, max_length=300)
    links: list[Annotated[str, Field(min_length=1, max_length=300, pattern=NOT_BLANK)]] = Field(
        default_factory=list, max_length=5
    )
    tone: Literal["friendly", "formal", "direct"] = "friendly"
    length: int = Field(120, ge=40, le=400, description="About this many words.")


class StepIn(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "oneOf": [
                {"required": ["subject", "body"], "not": {"required": ["ai_draft"]}},
                {
                    "required": ["ai_draft"],
                    "not": {"anyOf": [{"required": ["subject"]}, {"required": ["body"]}]},
                },
            ]
        },
    )
    delay_s: float = Field(
        0, ge=0, le=90 * 86_400, description="After the previous step (the first: enrolment)."
    )
    subject: str | None = Field(None, min_length=1, max_length=500)
    body: str | None = Field(None, min_length=1, max_length=50_000)
    ai_draft: AiDraftIn | None = Field(
        None,
        description="Instead of subject and body: an AI draft per recipient, written at "
        "enrolment and editable (PATCH /api/v1/drafts/{id}) until the step goes.",
    )

    @field_validator("subject", "body")
    @classmethod
    def _known_variables(cls, value: str | None) -> str | None:
        unknown = service.unknown_variables(value or "")
        if unknown:
            raise ValueError(
                f"unknown variables {unknown}; use {list(service.VARIABLES)} as {{{{name}}}}"
            )
        return value

    @model_validator(mode="after")
    def _one_body(self) -> StepIn:
        templated = self.subject is not None and self.body is not None
        if templated == (self.ai_draft is not None) or (
            self.ai_draft is not None and (self.subject or self.body)
        ):
            raise ValueError("give a step either subject and body, or ai_draft")
        return self


class WindowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    days: list[Annotated[int, Field(ge=0, le=6)]] = Field(
        [0, 1, 2, 3, 4], min_length=1, description="0 = Monday … 6 = Sunday"
    )
    start_hour: int = Field(9, ge=0, le=23)
    end_hour: int = Field(17, ge=1, le=24)

    @model_validator(mode="after")
    def _check(self) -> WindowIn:
        if self.end_hour <= self.start_hour:
            raise ValueError("end_hour must be after start_hour")
        return self


class SequenceIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=200)
    sender_id: str = Field(max_length=32)
    steps: list[StepIn] = Field(min_length=1, max_length=20)
    window: WindowIn = Field(default_factory=WindowIn)
    timezone: str = Field("UTC", max_length=64, description="IANA zone when a contact has none.")
    stop_on: list[Literal["reply", "bounce", "unsubscribe", "spam_report"]] = Field(
        default_factory=lambda: list(service.STOP_CONDITIONS)  # type: ignore[arg-type]
    )
    domain_hourly_limit: int = Field(20, ge=1, le=10_000)

    _zone = field_validator("timezone")(iana_zone)


class SequenceOut(BaseModel):
    id: str
    name: str
    sender_id: str
    steps: list[dict[str, Any]]
    window: dict[str, Any]
    timezone: str
    stop_on: list[str]
    domain_hourly_limit: int


class ContactIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: EmailStr
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    company: str | None = Field(None, max_length=200)
    title: str | None = Field(None, max_length=200)
    timezone: str | None = Field(None, max_length=64, description="IANA zone of the contact.")

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None and not valid_zone(value):
            raise ValueError(f"{value!r} is not an IANA time zone, e.g. America/New_York")
        return value


class EnrollIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    contacts: list[ContactIn] | None = Field(None, min_length=1, max_length=MAX_ENROLL)
    enrichment_job_id: str | None = Field(None, max_length=32)

    @model_validator(mode="after")
    def _one_source(self) -> EnrollIn:
        if (self.contacts is None) == (self.enrichment_job_id is None):
            raise ValueError("send either contacts or enrichment_job_id")
        return self


class RunOut(BaseModel):
    id: str
    sequence_id: str
    total: int
    remaining: int
    rejected: list[dict[str, Any]]
    finished_at: UtcDateTime | None
    enrollments: dict[str, int]
    sends: dict[str, int]


class EnrollmentOut(BaseModel):
    id: str
    sequence_id: str
    run_id: str
    email: str
    status: str
    waiting_for: str | None = Field(
        description="credits (buy some and it goes on) or draft (its AI draft is not written "
        "yet, or needs your edit): why an active enrolment's next step waits."
    )
    stop_reason: str | None
    finished_at: UtcDateTime | None
    steps: list[dict[str, Any]] | None = None
    timeline: list[dict[str, Any]] | None = None


def _sender_out(s: Sender) -> SenderOut:
    return SenderOut.model_validate(s, from_attributes=True)


def _sequence_out(q: SequenceDef) -> SequenceOut:
    return SequenceOut.model_validate(q, from_attributes=True)


async def _owned(session: SessionDep, model: Any, id_: str, user_id: str, what: str) -> Any:
    row = await session.get(model, id_)
    if row is None or row.user_id != user_id:
        raise NotFound(f"no {what} {id_!r}")
    return row


@router.post("/senders", status_code=status.HTTP_201_CREATED, response_model=SenderOut)
async def create_sender(body: SenderIn, user: CurrentUser, runtime: RuntimeDep) -> SenderOut:
    sender = Sender(user_id=user.id, started_at=runtime.clock(), **body.model_dump())
    sender.email = sender.email.lower()
    async with runtime.db.write_session() as session:
        session.add(sender)
    return _sender_out(sender)


@router.get("/senders", response_model=list[SenderOut])
async def list_senders(user: CurrentUser, session: SessionDep) -> list[SenderOut]:
    rows = await session.scalars(
        select(Sender).where(Sender.user_id == user.id).order_by(Sender.id)
    )
    return [_sender_out(s) for s in rows]


@router.post("/senders/{sender_id}/{action}", response_model=SenderOut)
async def pause_sender(
    sender_id: str, action: str, user: CurrentUser, runtime: RuntimeDep
) -> SenderOut:
    """`pause` or `resume` a sender (a paused one sends nothing; its steps wait)."""
    if action not in ("pause", "resume"):
        raise NotFound(f"no sender action {action!r}; use pause or resume")
    async with runtime.db.write_session() as session:
        sender: Sender = await _owned(session, Sender, sender_id, user.id, "sender")
        sender.paused = action == "pause"
        sender.paused_reason = "by_user" if sender.paused else None
    if not sender.paused and runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    return _sender_out(sender)


@router.post("/sequences", status_code=status.HTTP_201_CREATED, response_model=SequenceOut)
async def create_sequence(body: SequenceIn, user: CurrentUser, runtime: RuntimeDep) -> SequenceOut:
    sequence = SequenceDef(
        user_id=user.id,
        name=body.name,
        sender_id=body.sender_id,
        steps=[s.model_dump(exclude_none=True) for s in body.steps],
        window=body.window.model_dump(),
        timezone=body.timezone,
        stop_on=body.stop_on,
        domain_hourly_limit=body.domain_hourly_limit,
    )
    async with runtime.db.write_session() as session:
        await _owned(session, Sender, body.sender_id, user.id, "sender")
        session.add(sequence)
    return _sequence_out(sequence)


@router.get("/sequences", response_model=list[SequenceOut])
async def list_sequences(user: CurrentUser, session: SessionDep) -> list[SequenceOut]:
    """Your sequences, newest first."""
    rows = await session.scalars(
        select(SequenceDef)
        .where(SequenceDef.user_id == user.id)
        .order_by(SequenceDef.created_at.desc(), SequenceDef.id.desc())
    )
    return [_sequence_out(q) for q in rows]


@router.get("/sequences/{sequence_id}", response_model=SequenceOut)
async def get_sequence(sequence_id: str, user: CurrentUser, session: SessionDep) -> SequenceOut:
    return _sequence_out(await _owned(session, SequenceDef, sequence_id, user.id, "sequence"))


async def _contacts(
    request: Request, user_id: str, session: SessionDep
) -> tuple[list[ContactIn], list[dict[str, Any]]]:
    """The contacts of an enrolment request: JSON contacts, a CSV body, or an enrichment
    job's found results; rows that cannot be used come back as `rejected`."""
    rejected: list[dict[str, Any]] = []
    raw = await request.body()
    if request.headers.get("content-type", "").startswith("text/csv"):
        try:
            reader = csv.DictReader(io.StringIO(raw.decode("utf-8-sig")))
            rows = list(reader)
        except (UnicodeDecodeError, csv.Error) as exc:
            raise Unprocessable(f"the CSV could not be read: {exc}") from exc
        if not reader.fieldnames or "email" not in reader.fieldnames:
            raise Unprocessable("the CSV needs a header row with an `email` column")
        if len(rows) > MAX_ENROLL:
            raise Unprocessable(f"at most {MAX_ENROLL} contacts per request")
        contacts = []
        fields = set(ContactIn.model_fields)
        for line, row in enumerate(rows, start=2):
            try:
                contacts.append(
                    ContactIn.model_validate(
                        {k: v for k, v in row.items() if k in fields and v not in (None, "")}
                    )
                )
            except ValueError as exc:
                rejected.append({"line": line, "reason": str(exc).splitlines()[-1][:200]})
        return contacts, rejected
    try:
        body = EnrollIn.model_validate(json.loads(raw or b"null"))
    except (json.JSONDecodeError, ValueError) as exc:
        raise Unprocessable(
            'send {"contacts": [{"email": …}]} or {"enrichment_job_id": …} as JSON, '
            "or a CSV (text/csv) with an email column",
            details={"problem": str(exc)[:500]},
        ) from exc
    if body.contacts is not None:
        return body.contacts, rejected
    job = await session.get(EnrichmentJob, body.enrichment_job_id)
    if job is None or job.user_id != user_id:
        raise NotFound(f"no enrichment job {body.enrichment_job_id!r}")
    items = await session.scalars(
        select(EnrichmentItem)
        .where(EnrichmentItem.job_id == job.id, EnrichmentItem.status == "found")
        .order_by(EnrichmentItem.line)
    )
    contacts = []
    for item in items:
        if item.email:
            contacts.append(
                ContactIn(
                    email=item.email,
                    first_name=item.first_name,
                    last_name=item.last_name,
                    company=item.domain,
                    title=item.title,
                )
            )
    return contacts, rejected


@router.post(
    "/sequences/{sequence_id}/enrollments",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RunOut,
    openapi_extra={
        "requestBody": {
            "content": {
                "application/json": {"schema": EnrollIn.model_json_schema()},
                "text/csv": {"schema": {"type": "string"}},
            }
        }
    },
)
async def enroll(
    sequence_id: str,
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    runtime: RuntimeDep,
) -> JSONResponse:
    """Enrols contacts; 202 with the run to follow at Location."""
    await _owned(session, SequenceDef, sequence_id, user.id, "sequence")
    contacts, rejected = await _contacts(request, user.id, session)
    if not contacts:
        raise Unprocessable(
            "no contact to enrol: send at least one with an email address"
            + (" (every row was rejected; see details)" if rejected else ""),
            details={"rejected": rejected},
        )
    async with runtime.db.write_session() as writer:
        sequence = await _owned(writer, SequenceDef, sequence_id, user.id, "sequence")
        run = await service.enroll(
            writer,
            sequence,
            [c.model_dump(exclude_none=True) for c in contacts],
            rejected,
            runtime.clock(),
        )
    if runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    out = await _run_out(session, run)
    return JSONResponse(
        out.model_dump(),
        status_code=202,
        headers={"Location": f"/api/v1/sequence-runs/{run.id}"},
    )


async def _run_out(session: SessionDep, run: SequenceRun) -> RunOut:
    summary = await service.run_summary(session, run.id)
    return RunOut(
        id=run.id,
        sequence_id=run.sequence_id,
        total=run.total,
        remaining=run.remaining,
        rejected=run.rejected,
        finished_at=run.finished_at,
        **summary,
    )


@router.get("/sequence-runs/{run_id}", response_model=RunOut)
async def get_run(run_id: str, user: CurrentUser, session: SessionDep) -> RunOut:
    return await _run_out(session, await _owned(session, SequenceRun, run_id, user.id, "run"))


def _enrollment_out(e: Enrollment) -> EnrollmentOut:
    return EnrollmentOut(
        id=e.id,
        sequence_id=e.sequence_id,
        run_id=e.run_id,
        email=e.email,
        status=e.status,
        waiting_for=e.waiting_for,
        stop_reason=e.stop_reason,
        finished_at=e.finished_at,
    )


@router.get("/enrollments", response_model=list[EnrollmentOut])
async def list_enrollments(
    request: Request,
    user: CurrentUser,
    session: SessionDep,
    sequence_id: Annotated[str | None, Query(max_length=32)] = None,
    run_id: Annotated[str | None, Query(max_length=32)] = None,
    status_: Annotated[str | None, Query(alias="status", max_length=16)] = None,
    email: Annotated[str | None, Query(max_length=320)] = None,
    after: Annotated[
        str | None, Query(max_length=32, description="Last id of the page before.")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[EnrollmentOut]:
    repeated = sorted({k for k in request.query_params if len(request.query_params.getlist(k)) > 1})
    if repeated:
        raise Unprocessable(f"give each filter once: {', '.join(repeated)} came more than once")
    query = select(Enrollment).where(Enrollment.user_id == user.id)
    if sequence_id:
        query = query.where(Enrollment.sequence_id == sequence_id)
    if run_id:
        query = query.where(Enrollment.run_id == run_id)
    if status_:
        query = query.where(Enrollment.status == status_)
    if email:
        query = query.where(Enrollment.email == email.lower())
    if after:
        query = query.where(Enrollment.id > after)
    rows = await session.scalars(query.order_by(Enrollment.id).limit(limit))
    return [_enrollment_out(e) for e in rows]


@router.get("/enrollments/{enrollment_id}", response_model=EnrollmentOut)
async def get_enrollment(
    enrollment_id: str, user: CurrentUser, session: SessionDep
) -> EnrollmentOut:
    """The enrolment with its steps and timeline (scheduled, sending, sent with SendGrid's
    message id, processed, delivered, opened, bounced, replied, stopped…, with times)."""
    enrollment = await _owned(session, Enrollment, enrollment_id, user.id, "enrollment")
    out = _enrollment_out(enrollment)
    sends = await session.scalars(
        select(SequenceSend)
        .where(SequenceSend.enrollment_id == enrollment.id)
        .order_by(SequenceSend.step)
    )
    out.steps = [
        {
            "step": s.step,
            "send_id": s.id,
            "state": s.state,
            "due_at": _iso(s.due_at),
            "sent_at": _iso(s.sent_at),
            "message_id": s.message_id,
            "outcome": s.outcome,
            "draft_id": s.draft_id,
            "draft_state": s.draft_state,
        }
        for s in sends
    ]
    entries = await session.scalars(
        select(TimelineEntry)
        .where(TimelineEntry.enrollment_id == enrollment.id)
        # In the order we learnt of them: SendGrid's event times are whole seconds.
        .order_by(TimelineEntry.id)
    )
    out.timeline = [
        {"kind": t.kind, "step": t.step, "at": _iso(t.at), "detail": t.detail} for t in entries
    ]
    return out


@router.post("/enrollments/{enrollment_id}/{action}", response_model=EnrollmentOut)
async def act_on_enrollment(
    enrollment_id: str, action: str, user: CurrentUser, runtime: RuntimeDep
) -> EnrollmentOut:
    """`pause`, `resume`, `cancel`, or `replied` (a reply seen elsewhere: stops it)."""
    if action not in ("pause", "resume", "cancel", "replied"):
        raise NotFound(f"no enrollment action {action!r}; use pause, resume, cancel or replied")
    now = runtime.clock()
    async with runtime.db.write_session() as session:
        enrollment: Enrollment = await _owned(
            session, Enrollment, enrollment_id, user.id, "enrollment"
        )
        if enrollment.status not in service.ACTIVE:
            raise Conflict(f"the enrollment has ended ({enrollment.status}); nothing to {action}")
        if action == "cancel":
            await service.end_enrollments(session, [enrollment.id], "cancelled", now)
        elif action == "replied":
            await service.reply(session, enrollment, now, "reported by the API")
        elif action == "pause":
            await service.pause(session, enrollment, now)
        else:
            await service.resume(session, enrollment, now)
    if action == "resume" and runtime.dispatcher is not None:
        runtime.dispatcher.wake()
    async with runtime.db.session() as session:
        fresh = await session.get(Enrollment, enrollment_id)
        assert fresh is not None
        return _enrollment_out(fresh)


class BlockIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    email: str = Field(
        max_length=320, pattern=r"^[^@\s]+@[^@\s]+$", description="The address to block."
    )


@router.post("/blocklist", status_code=status.HTTP_201_CREATED)
async def block_address(body: BlockIn, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """Adds an address to your blocklist: it is never mailed again by your sequences."""
    async with runtime.db.write_session() as session:
        ended = await suppressions.block(session, user.id, body.email, "blocklist", runtime.clock())
    return {"email": body.email.lower(), "enrollments_stopped": ended}
