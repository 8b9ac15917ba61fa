"""AI-drafted steps: each enrolment's AI step gets its own draft (the contact as recipient,
the step's aim, tone and length), written through the drafting service while the step
sleeps, so the user can read and edit it (PATCH /api/v1/drafts/{id}) before it goes.

A draft the model chain could not write falls back to the drafting service's template (the
timeline says so); a stream broken mid-text is tried again once with a fresh draft, then the
step waits for the user (`waiting_for: draft`) with the partial draft to edit; a spent token
budget (or anything else the drafting service refuses) leaves the step pending for the next
pass."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select

from roleferry.config import Settings
from roleferry.db import Database
from roleferry.drafting import service as drafting
from roleferry.drafting.models import Draft
from roleferry.drafting.prompt import DraftRequest
from roleferry.drafting.stream import ModelChain
from roleferry.errors import ApiError
from roleferry.outreach import service, suppressions
from roleferry.outreach.models import Enrollment, SequenceDef, SequenceSend

log = structlog.get_logger(__name__)

ATTEMPTS = 2
PENDING, READY, INCOMPLETE = "pending", "ready", "incomplete"


def request_for(step: dict[str, Any], contact: dict[str, Any], email: str) -> DraftRequest:
    """The draft request of one recipient: the contact as recipient, the step's aim."""
    ai = step["ai_draft"]
    recipient = {k: v for k, v in contact.items() if k in ("first_name", "last_name", "title")}
    recipient["company"] = contact.get("company") or ""
    recipient["domain"] = email.rsplit("@", 1)[1]
    return DraftRequest.model_validate(
        {
            "recipient": {k: v for k, v in recipient.items() if v},
            "aim": {k: ai[k] for k in ("role", "about", "links") if ai.get(k)},
            "tone": ai.get("tone", "friendly"),
            "length": ai.get("length", 120),
        }
    )


def text_of(draft: Draft) -> tuple[str, str] | None:
    """Subject and body as they go: the user's edit where there is one; None while neither
    a finished draft nor an edit has a subject and a body."""
    subject = draft.edited_subject or draft.subject
    body = draft.edited_body or draft.body
    if subject and body:
        return subject, body
    return None


@dataclass
class Pending:
    send_id: str
    enrollment_id: str
    user_id: str
    step: int
    request: DraftRequest


class Drafter:
    def __init__(
        self,
        database: Database,
        chain: ModelChain,
        settings: Settings,
        clock: Callable[[], float],
    ) -> None:
        self.db = database
        self.chain = chain
        self.settings = settings
        self.clock = clock

    async def pending(self, limit: int) -> list[Pending]:
        """AI steps of active or paused enrolments with no usable draft yet, oldest first
        (a paused enrolment's draft is ready to read and edit before it is resumed)."""
        async with self.db.session() as session:
            rows = (
                await session.execute(
                    select(SequenceSend, Enrollment, SequenceDef)
                    .join(Enrollment, Enrollment.id == SequenceSend.enrollment_id)
                    .join(SequenceDef, SequenceDef.id == Enrollment.sequence_id)
                    .where(
                        SequenceSend.draft_state == PENDING,
                        SequenceSend.state == "scheduled",
                        Enrollment.status.in_(service.ACTIVE),
                    )
                    .order_by(SequenceSend.id)
                    .limit(limit)
                )
            ).all()
            # A suppressed or blocked recipient will never be mailed: no draft, no charge.
            barred = await suppressions.barred(session, {(s.user_id, s.email) for s, _, _ in rows})
        return [
            Pending(
                send.id,
                enrollment.id,
                send.user_id,
                send.step,
                request_for(sequence.steps[send.step], enrollment.contact, send.email),
            )
            for send, enrollment, sequence in rows
            if (send.user_id, send.email) not in barred
        ]

    async def write(self, item: Pending) -> str:
        """Drafts one step; returns what became of it (ready, retry, incomplete, refused, gone)."""
        async with self.db.session() as session:
            status = await session.scalar(
                select(Enrollment.status).where(Enrollment.id == item.enrollment_id)
            )
        if status not in service.ACTIVE:
            return "gone"  # ended while waiting its turn: nothing to write, nothing to charge
        try:
            draft = await drafting.prepare(
                self.db,
                item.user_id,
                item.request,
                self.settings.draft_daily_tokens,
                self.settings,
            )
        except ApiError as exc:
            async with self.db.write_session() as session:
                await self._wait(session, item, "draft_waiting", exc.message)
            return "refused"
        run = drafting.Run(
            self.db, self.chain, self.settings.draft_deadline_s, draft, self.settings, new=True
        )
        async for _event in run.events():
            pass
        async with self.db.write_session() as session:
            stored = await session.get(Draft, draft.id)
            send = await session.get(SequenceSend, item.send_id, with_for_update=True)
            assert stored is not None
            if send is None or send.draft_state != PENDING:
                return "gone"
            send.draft_id = stored.id
            send.draft_attempts += 1
            now = self.clock()
            if stored.status == "complete":
                send.draft_state = READY
                detail = f"{stored.source} {stored.model or ''}".strip()
                if stored.source == "template":
                    detail = "template: no model could write it"
                service.note(session, item.enrollment_id, "drafted", now, item.step, detail)
                return READY
            reason = stored.incomplete_reason or "incomplete"
            if send.draft_attempts < ATTEMPTS:
                service.note(session, item.enrollment_id, "draft_retry", now, item.step, reason)
                return "retry"
            send.draft_state = INCOMPLETE
            await self._wait(session, item, "draft_incomplete", f"{reason}; edit {stored.id}")
            return INCOMPLETE

    async def _wait(self, session: Any, item: Pending, kind: str, detail: str) -> None:
        enrollment = await session.get(Enrollment, item.enrollment_id)
        if enrollment is not None and enrollment.waiting_for != "draft":
            enrollment.waiting_for = "draft"
            service.note(session, item.enrollment_id, kind, self.clock(), item.step, detail)
