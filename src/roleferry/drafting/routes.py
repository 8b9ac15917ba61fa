"""Drafting API: write a draft (streamed as SSE or one JSON answer), continue a broken one,
read, list and edit your drafts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from sqlalchemy import select

from roleferry.api.deps import CurrentUser, RuntimeDep, SessionDep
from roleferry.api.times import UtcDateTime
from roleferry.drafting import service
from roleferry.drafting.models import Draft
from roleferry.drafting.prompt import DraftRequest
from roleferry.drafting.stream import ModelChain, model_chain
from roleferry.errors import ApiError, Conflict, ServiceUnavailable
from roleferry.runtime import Runtime
from roleferry.users.models import utcnow

router = APIRouter(prefix="/api/v1", tags=["drafts"])
log = structlog.get_logger(__name__)

SSE = "text/event-stream"
DraftId = Annotated[str, Path(max_length=64, description="A draft's id, drf_…")]


class Usage(BaseModel):
    input_tokens: int
    output_tokens: int


class DraftOut(BaseModel):
    id: str
    status: str = Field(description="streaming, complete or incomplete.")
    source: str | None = Field(description="model or template.")
    model: str | None
    subject: str | None = Field(description="As written (the original, never edited).")
    body: str | None
    partial_text: str | None = Field(description="What a broken stream wrote, for continue.")
    incomplete_reason: str | None
    edited_subject: str | None = Field(description="Your edit, kept beside the original.")
    edited_body: str | None
    edited_at: UtcDateTime | None
    request: dict[str, Any]
    usage: Usage
    created_at: UtcDateTime
    updated_at: UtcDateTime

    @classmethod
    def of(cls, draft: Draft) -> DraftOut:
        return cls(
            id=draft.id,
            status=draft.status,
            source=draft.source,
            model=draft.model,
            subject=draft.subject,
            body=draft.body,
            partial_text=draft.partial_text,
            incomplete_reason=draft.incomplete_reason,
            edited_subject=draft.edited_subject,
            edited_body=draft.edited_body,
            edited_at=draft.edited_at,
            request=draft.request,
            usage=Usage(input_tokens=draft.input_tokens, output_tokens=draft.output_tokens),
            created_at=draft.created_at,
            updated_at=draft.updated_at,
        )


# Not blank, and no NUL (which PostgreSQL cannot store in text).
EDIT_TEXT = r"^[^\x00]*[^\s\x00\x1c-\x1f][^\x00]*$"


class DraftEdit(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    subject: str = Field("", max_length=300, pattern=EDIT_TEXT)
    body: str = Field("", max_length=20_000, pattern=EDIT_TEXT)

    @model_validator(mode="after")
    def _something(self) -> DraftEdit:
        if not (self.subject or self.body):
            raise ValueError("give subject, body or both")
        return self


def chain_of(runtime: Runtime, request: Request) -> ModelChain:
    """This app's model chain, built on first use from the running providers."""
    providers = runtime.providers
    if providers is None:
        raise ServiceUnavailable("the server is starting; try again in a moment")
    built: tuple[object, ModelChain] | None = getattr(request.app.state, "draft_chain", None)
    if built is None or built[0] is not providers:
        chain = model_chain(providers, runtime.settings)
        built = request.app.state.draft_chain = (providers, chain)
    return built[1]


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


def _sse(events: AsyncIterator[service.Event], status_code: int) -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        """The run's events; a failure of ours mid-stream (the database gone, or the credits
        taken by another draft at the same moment) ends with an `error` event, so the client
        is told rather than cut off."""
        try:
            async for name, data in events:
                yield _event(name, data)
        except ApiError as exc:
            yield _event("error", {"code": exc.code, "message": exc.message})
        except Exception as exc:
            log.error("draft_stream_failed", error_type=type(exc).__name__, exc_info=True)
            yield _event(
                "error",
                {"code": "internal_error", "message": "the draft failed on our side; try again"},
            )

    return StreamingResponse(
        body(),
        status_code=status_code,
        media_type=SSE,
        headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
    )


async def _answer(
    request: Request,
    runtime: Runtime,
    draft: Draft,
    *,
    status_code: int,
    hold_id: int | None = None,
) -> StreamingResponse | JSONResponse:
    run = service.Run(
        runtime.db,
        chain_of(runtime, request),
        runtime.settings.draft_deadline_s,
        draft,
        runtime.settings,
        new=status_code == 201,
        hold_id=hold_id,
    )
    if SSE in request.headers.get("accept", ""):
        return _sse(run.events(), status_code)
    async for _event in run.events():
        pass
    async with runtime.db.session() as session:
        stored = await session.get(Draft, draft.id)
        assert stored is not None
        out = DraftOut.of(stored)
    return JSONResponse(out.model_dump(mode="json"), status_code=status_code)


STREAM_DOC = {
    "description": "The draft as JSON; with `Accept: text/event-stream`, SSE events: start, "
    "delta, restart, done, incomplete (docs/drafting.md).",
    "content": {SSE: {}},
}


@router.post(
    "/drafts",
    status_code=201,
    response_model=DraftOut,
    responses={
        201: STREAM_DOC,
        402: {"description": "Not enough credits for a draft (`ai_draft`)."},
        429: {"description": "Today's token budget is spent."},
    },
)
async def create_draft(
    body: DraftRequest, request: Request, user: CurrentUser, runtime: RuntimeDep
) -> StreamingResponse | JSONResponse:
    """Writes an outreach email to the recipient for the role you want, and stores it. A
    draft a model completes costs `ai_draft` credits, once (docs/drafting.md)."""
    chain_of(runtime, request)
    settings = runtime.settings
    draft = await service.prepare(runtime.db, user.id, body, settings.draft_daily_tokens, settings)
    return await _answer(request, runtime, draft, status_code=201)


@router.post(
    "/drafts/{draft_id}/continue",
    response_model=DraftOut,
    responses={
        200: STREAM_DOC,
        402: {"description": "Not enough credits for a draft (`ai_draft`)."},
        409: {"description": "The draft is not incomplete."},
    },
)
async def continue_draft(
    draft_id: DraftId,
    request: Request,
    user: CurrentUser,
    runtime: RuntimeDep,
) -> StreamingResponse | JSONResponse:
    """Continues an incomplete draft from its partial text."""
    chain_of(runtime, request)
    settings = runtime.settings
    draft, hold_id = await service.reopen(
        runtime.db, user.id, draft_id, settings.draft_daily_tokens, settings
    )
    return await _answer(request, runtime, draft, status_code=200, hold_id=hold_id)


@router.get("/drafts")
async def list_drafts(
    user: CurrentUser,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    before: Annotated[str | None, Query(max_length=64, description="A draft id.")] = None,
) -> list[DraftOut]:
    """Your drafts, newest first; `before` pages on from a draft of yours."""
    query = select(Draft).where(Draft.user_id == user.id)
    if before is not None:
        cursor = await service.owned(session, user.id, before)
        query = query.where(
            (Draft.created_at < cursor.created_at)
            | ((Draft.created_at == cursor.created_at) & (Draft.id < cursor.id))
        )
    rows = await session.scalars(
        query.order_by(Draft.created_at.desc(), Draft.id.desc()).limit(limit)
    )
    return [DraftOut.of(d) for d in rows]


@router.get("/drafts/{draft_id}")
async def get_draft(draft_id: DraftId, user: CurrentUser, session: SessionDep) -> DraftOut:
    return DraftOut.of(await service.owned(session, user.id, draft_id))


@router.patch("/drafts/{draft_id}")
async def edit_draft(
    draft_id: DraftId,
    edit: DraftEdit,
    user: CurrentUser,
    runtime: RuntimeDep,
) -> DraftOut:
    """Your edit of the subject and/or body, stored beside what was written."""
    async with runtime.db.write_session() as session:
        draft = await service.owned(session, user.id, draft_id)
        if draft.status == "streaming":
            raise Conflict(f"draft {draft_id!r} is still being written; edit it once it ends")
        if edit.subject:
            draft.edited_subject = edit.subject
        if edit.body:
            draft.edited_body = edit.body
        draft.edited_at = utcnow()
        await session.flush()
        await session.refresh(draft)
        return DraftOut.of(draft)
