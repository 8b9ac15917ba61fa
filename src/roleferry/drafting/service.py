"""Drafts: the budget check, the stored row, and the run that turns the model chain's pieces
into the events a client sees (`start`, `delta`, `restart`, `done`, `incomplete`).

A run always ends with a stored draft: the model's text when it passes the checks (one retry
when it does not), else the template; or, when a stream breaks after its first token, the
partial text with status `incomplete`, which `continue` resumes (the partial text as the
assistant's prefill)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.db import Database
from roleferry.drafting import prompt
from roleferry.drafting.metrics import CHECK_FAILURES, DRAFTS
from roleferry.drafting.models import Draft
from roleferry.drafting.prompt import DraftRequest, Email
from roleferry.drafting.stream import Call, Ended, Exhausted, ModelChain, Started, Text
from roleferry.errors import Conflict, NotFound, TooManyRequests
from roleferry.ids import new_id
from roleferry.payments.credits import Credits
from roleferry.payments.settings import PaymentSettings
from roleferry.resilience.deadline import Deadline
from roleferry.users.models import utcnow

Event = tuple[str, dict[str, Any]]
KIND = "ai_draft"
"""What a draft costs (payments' price): charged once, when a model completes the draft."""


def _day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


async def check_budget(session: AsyncSession, user_id: str, daily_tokens: int) -> None:
    """429 with the reset time when the user's tokens of today (UTC) reach the budget."""
    if not daily_tokens:
        return
    now = utcnow()
    start = _day_start(now)
    spent = await session.scalar(
        select(func.coalesce(func.sum(Draft.input_tokens + Draft.output_tokens), 0)).where(
            Draft.user_id == user_id, Draft.created_at >= start
        )
    )
    if (spent or 0) >= daily_tokens:
        reset = start + timedelta(days=1)
        raise TooManyRequests(
            f"today's drafting budget of {daily_tokens} tokens is spent; "
            f"it resets at {reset.strftime('%Y-%m-%dT%H:%M:%SZ')}",
            details={
                "budget_tokens": daily_tokens,
                "spent_tokens": spent,
                "reset_at": reset.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            headers={"Retry-After": str(max(1, int((reset - now).total_seconds())))},
        )


async def owned(session: AsyncSession, user_id: str, draft_id: str) -> Draft:
    """The user's draft; another user's is as absent as a missing one."""
    draft = await session.get(Draft, draft_id)
    if draft is None or draft.user_id != user_id:
        raise NotFound(f"no draft {draft_id!r}")
    return draft


async def prepare(
    db: Database,
    user_id: str,
    request: DraftRequest,
    daily_tokens: int,
    billing: PaymentSettings,
) -> Draft:
    """A new draft, not yet stored (its run stores it, and holds its price, while the model
    is first called), once the user's budget and credits allow it: 429 or 402 before any
    model is called."""
    async with db.session() as session:
        await check_budget(session, user_id, daily_tokens)
        await Credits(session, billing).check(user_id, KIND, 1)
    now = utcnow()
    return Draft(
        id=new_id("drf"),
        user_id=user_id,
        status="streaming",
        request=request.model_dump(mode="json", exclude_defaults=True),
        input_tokens=0,
        output_tokens=0,
        created_at=now,
        updated_at=now,
    )


async def reopen(
    db: Database, user_id: str, draft_id: str, daily_tokens: int, billing: PaymentSettings
) -> tuple[Draft, int | None]:
    """Claims an incomplete draft for `continue` and holds its price (the hold's id, None
    when drafts are free); 409 unless it is incomplete (two continues at once: one wins),
    429 or 402 before any model is called."""
    async with db.write_session() as session:
        draft = await owned(session, user_id, draft_id)
        if draft.status != "incomplete":
            raise Conflict(
                f"draft {draft_id!r} is {draft.status}; only an incomplete draft can be continued"
            )
        await check_budget(session, user_id, daily_tokens)
        claimed = await session.execute(
            update(Draft)
            .where(Draft.id == draft_id, Draft.status == "incomplete")
            .values(status="streaming", updated_at=utcnow())
        )
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            raise Conflict(f"draft {draft_id!r} is already being continued")
        hold = await Credits(session, billing).reserve(
            user_id, KIND, 1, f"draft:{draft_id}:{new_id('run')}"
        )
        await session.refresh(draft)
    return draft, hold.id if hold is not None else None


class Run:
    """One draft's writing, from the chain's first call to the stored result."""

    def __init__(
        self,
        db: Database,
        chain: ModelChain,
        deadline_s: float,
        draft: Draft,
        billing: PaymentSettings,
        *,
        new: bool,
        hold_id: int | None = None,
    ) -> None:
        self.db = db
        self.billing = billing
        self.new = new
        self.hold_id = hold_id
        self.inserted: asyncio.Task[None] | None = None
        self.chain = chain
        self.deadline_s = deadline_s
        self.draft = draft
        self.request = DraftRequest.model_validate(draft.request)
        self.prefill = (draft.partial_text or "").rstrip()
        self.text = ""
        self.model: str | None = None
        self.tokens = [0, 0]
        self.ended = False

    def _call(self) -> Call:
        messages = [{"role": "user", "content": prompt.user_prompt(self.request)}]
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return Call(prompt.system_prompt(self.request), messages, prompt.max_tokens(self.request))

    async def events(self) -> AsyncIterator[Event]:
        """The events of the run; whatever stops it (a client gone), the draft is stored."""
        if self.new:
            # Stored while the model is called, not before: the insert (a write transaction
            # with the hold of the draft's price) stays off the time to first token, and
            # `start` may come before it ends.
            self.inserted = asyncio.create_task(self._insert())
        try:
            async for event in self._events():
                yield event
        finally:
            if self.inserted is not None:
                await asyncio.shield(self.inserted)
            if not self.ended:
                await asyncio.shield(self._store_incomplete("client_gone"))

    async def _insert(self) -> None:
        """The draft and the hold of its price, in one transaction: no draft without its hold.
        Two drafts at once on the last credits pass the check; the second one's hold is a
        402 here, which ends its run before its first event (nothing stored or charged)."""
        async with self.db.write_session() as session:
            session.add(self.draft)
            await session.flush()
            hold = await Credits(session, self.billing).reserve(
                self.draft.user_id, KIND, 1, f"draft:{self.draft.id}"
            )
            self.hold_id = hold.id if hold is not None else None

    async def _stored(self) -> None:
        """Waits for the insert, before the draft's row is changed."""
        if self.inserted is not None:
            await self.inserted

    def _check_stored(self) -> None:
        """The insert's failure (its hold refused: another draft took the last credits) as
        soon as it is known: the first token does not wait for the insert, and such a run
        stops moments after it."""
        if self.inserted is not None and self.inserted.done():
            self.inserted.result()

    async def _events(self) -> AsyncIterator[Event]:
        overall = Deadline(self.deadline_s)
        draft_id = self.draft.id
        for attempt in range(2):
            self.text = ""
            ended: Ended | None = None
            async with aclosing(self.chain.stream(self._call(), overall)) as pieces:
                async for piece in pieces:
                    self._check_stored()
                    if isinstance(piece, Started):
                        self.model = piece.model
                        started = {"draft_id": draft_id, "model": piece.model, "source": "model"}
                        yield "start", started
                    elif isinstance(piece, Text):
                        self.text += piece.text
                        yield "delta", {"text": piece.text}
                    elif isinstance(piece, Ended):
                        ended = piece
                        self.tokens[0] += piece.input_tokens
                        self.tokens[1] += piece.output_tokens
                    elif isinstance(piece, Exhausted):
                        break
            if ended is None:
                break
            full = self.prefill + ended.text
            if ended.broken:
                # Shielded, as every store of the run: a client gone meanwhile must not
                # leave the draft `streaming`.
                await asyncio.shield(self._store_incomplete(ended.broken))
                yield (
                    "incomplete",
                    {
                        "draft_id": draft_id,
                        "model": ended.model,
                        "reason": ended.broken,
                        "text": full,
                        "usage": self._usage(),
                    },
                )
                return
            checked = prompt.check(full, self.request)
            if isinstance(checked, Email):
                yield "done", await asyncio.shield(self._store(checked, "model", ended.model))
                return
            CHECK_FAILURES.labels(checked).inc()
            if attempt == 0:
                yield "restart", {"draft_id": draft_id, "reason": checked}
        email = prompt.template(self.request)
        await self._stored()
        if self.prefill or self.text:
            yield "restart", {"draft_id": draft_id, "reason": "template"}
        yield "start", {"draft_id": draft_id, "model": None, "source": "template"}
        yield "delta", {"text": prompt.as_text(email)}
        yield "done", await asyncio.shield(self._store(email, "template", None))

    def _usage(self) -> dict[str, int]:
        return {"input_tokens": self.tokens[0], "output_tokens": self.tokens[1]}

    async def _store(self, email: Email, source: str, model: str | None) -> dict[str, Any]:
        await self._stored()
        self.ended = True
        async with self.db.write_session() as session:
            draft = await session.get(Draft, self.draft.id)
            assert draft is not None
            draft.status, draft.source, draft.model = "complete", source, model
            draft.subject, draft.body = email.subject, email.body
            draft.incomplete_reason = None
            draft.input_tokens += self.tokens[0]
            draft.output_tokens += self.tokens[1]
            await self._settle(session, 1 if source == "model" else 0)
        DRAFTS.labels(source, "complete").inc()
        return {
            "draft_id": self.draft.id,
            "subject": email.subject,
            "body": email.body,
            "model": model,
            "usage": self._usage(),
            "source": source,
        }

    async def _store_incomplete(self, reason: str) -> None:
        """Keeps the text so far (after any prefill) for `continue`."""
        await self._stored()
        self.ended = True
        async with self.db.write_session() as session:
            draft = await session.get(Draft, self.draft.id)
            assert draft is not None
            draft.status, draft.source, draft.model = "incomplete", "model", self.model
            draft.partial_text = self.prefill + self.text
            draft.incomplete_reason = reason
            draft.input_tokens += self.tokens[0]
            draft.output_tokens += self.tokens[1]
            await self._settle(session, 0)
        DRAFTS.labels("model", "incomplete").inc()

    async def _settle(self, session: AsyncSession, uses: int) -> None:
        """Closes this run's hold in the transaction that stores how the run ended: the draft's
        one charge when a model completed it (its reference is the draft's, so it is never
        charged twice), else nothing spent."""
        if self.hold_id is not None:
            await Credits(session, self.billing).settle(
                self.hold_id, uses, f"{KIND}:{self.draft.id}"
            )
