"""The dispatcher: reads the due-time table (`sequence_sends`), claims due steps and sends them.

Never twice. SendGrid has no idempotency key, so each send is

1. claimed: in one write transaction, every sending rule is checked and the step is marked
   `sending` (SQLite: the transaction holds the write lock; PostgreSQL: the due rows are
   taken FOR UPDATE SKIP LOCKED and the sender rows FOR UPDATE);
2. re-checked after that commit: a suppression, block or stop committed before the claim
   became visible is seen now, and the step ends without being sent;
3. sent with `send_once`, which never retries an attempt whose outcome is unknown;
4. recorded `sent` with SendGrid's message id in its own transaction.

A process that dies between 3 and 4 leaves the step `sending`. The `processed` event (which
carries the step's `send_id` in custom_args) moves it to `sent`; a step still `sending` after
`sequence_ambiguity_s` with no such event is scheduled again. The residual risk is a send that
SendGrid queued but whose events did not reach us within the window: it goes twice.

The sending rules, all at claim time: not suppressed (global list, the user's blocklist), the
enrolment active (no stop condition has happened), the sender not paused and under its daily
cap (warm-up ramp included), past the sender's minimum gap (with jitter), the recipient's
window open, the recipient's domain under the sequence's hourly limit, an AI step's draft
written, and the user's credits holding the email's price (`billing.py`). A step that may not
go yet gets a new `due_at` (the window's opening, the sender's next local day, the sender's
next free time) rather than being polled.

Steps claimed together for the same sequence step (one sender, one template) go as one
mail/send request of up to 1,000 personalizations, each with its own recipient, subject,
headers, custom_args and substitutions for the body's variables; an AI step's body is its
own, so it goes alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import case, func, select, tuple_, update

from roleferry.background import cancel_and_wait
from roleferry.config import Settings
from roleferry.db import Database
from roleferry.drafting.models import Draft
from roleferry.drafting.stream import ModelChain
from roleferry.outreach import billing, service, suppressions
from roleferry.outreach.drafts import PENDING, READY, Drafter, text_of
from roleferry.outreach.links import Signer
from roleferry.outreach.models import (
    Enrollment,
    Sender,
    SequenceDef,
    SequenceSend,
)
from roleferry.outreach.windows import local_day, next_midnight, next_open
from roleferry.providers.errors import ProviderError, Refusal
from roleferry.providers.sendgrid.client import SendGridClient, SendOutcomeUnknown
from roleferry.resilience.deadline import Deadline
from roleferry.users.models import User

log = structlog.get_logger(__name__)

DOMAIN_RECHECK_S = 60.0
CREDITS_RECHECK_S = 60.0
DRAFT_RECHECK_S = 60.0
SEND_DEADLINE_S = 30.0
SYNC_PAGE = 500
SYNC_RETRY_S = 60.0


def daily_cap(sender: Sender, now: float) -> int:
    """The warm-up ramp: `warmup_start` on day 0, `warmup_step` more each day, up to the cap;
    days are the sender's calendar days."""
    days = max(0, local_day(now, sender.timezone) - local_day(sender.started_at, sender.timezone))
    return min(sender.daily_cap, sender.warmup_start + sender.warmup_step * days)


@dataclass
class Claimed:
    """One claimed step: the request's shared part (from, reply_to, content) and its own
    personalization. Steps with the same `key` may share a request."""

    send_id: str
    enrollment_id: str
    user_id: str
    step: int
    email: str
    attempt: int
    key: tuple[str, ...]
    shared: dict[str, Any]
    personalization: dict[str, Any]

    @property
    def message(self) -> dict[str, Any]:
        return batch_message([self])


def batch_message(items: list[Claimed]) -> dict[str, Any]:
    return {"personalizations": [i.personalization for i in items], **items[0].shared}


def tag(variable: str) -> str:
    """The substitution tag a template variable becomes in a shared body."""
    return f"-rf.{variable}-"


@dataclass
class TickResult:
    claimed: int = 0
    sent: int = 0
    unknown: int = 0
    retried: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    resent: int = 0
    drafted: int = 0
    requests: int = 0
    waiting: Counter[str] = field(default_factory=Counter)


def batches(claimed: list[Claimed], most: int) -> list[list[Claimed]]:
    """Claimed steps grouped by request: same key, at most `most` personalizations each."""
    groups: dict[tuple[str, ...], list[Claimed]] = {}
    for item in claimed:
        groups.setdefault(item.key, []).append(item)
    return [group[i : i + most] for group in groups.values() for i in range(0, len(group), most)]


class Dispatcher:
    def __init__(
        self,
        database: Database,
        client: SendGridClient,
        settings: Settings,
        public_url: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        chain: ModelChain | None = None,
    ) -> None:
        self.db = database
        self.client = client
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self.clock = clock
        self.rng = rng or random.Random()
        self.signer = Signer.of(settings)
        self._task: asyncio.Task[None] | None = None
        self._drafting: asyncio.Task[None] | None = None
        self._draft_wake = asyncio.Event()
        self._wake = asyncio.Event()
        self._synced_at = 0.0
        self._started_at = clock()
        self._hold_until = 0.0
        self.drafter = None if chain is None else Drafter(database, chain, settings, clock)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sequence-dispatcher")
        if self._drafting is None and self.drafter is not None:
            # Its own loop: model calls take seconds, and due sends must not wait for them.
            self._drafting = asyncio.create_task(self._draft_run(), name="sequence-drafter")

    async def stop(self) -> None:
        await cancel_and_wait(self._drafting)
        await cancel_and_wait(self._task)
        self._task = self._drafting = None

    def wake(self) -> None:
        """New due steps (an enrolment, a resume): look now rather than at the next tick."""
        self._wake.set()
        self._draft_wake.set()

    async def _draft_run(self) -> None:
        while True:
            try:
                drafted = await self.draft_pending()
            except Exception:  # a bad pass must not end the drafter; the steps stay pending
                log.exception("sequence_draft_failed")
                drafted = 0
            if drafted:
                continue
            self._draft_wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._draft_wake.wait(), self.settings.sequence_tick_s)

    async def sync_suppressions(self) -> dict[str, int]:
        """Copies SendGrid's bounce, spam-report and unsubscribe lists into ours (entries
        created since the last sync, with a minute's overlap)."""
        since = max(0, int(self._synced_at) - 60)
        self._synced_at = self.clock()
        counts: dict[str, int] = {}
        for kind in ("bounce", "spam_report", "unsubscribe"):
            counts[kind] = 0
            offset = 0
            while True:
                rows = await self.client.suppressions(
                    kind, deadline=Deadline(SEND_DEADLINE_S), start_time=since, offset=offset
                )
                emails = {str(r["email"]) for r in rows if r.get("email")}
                async with self.db.write_session() as session:
                    counts[kind] += await suppressions.add(session, emails, kind, f"sync:{kind}")
                if len(rows) < SYNC_PAGE:
                    break
                offset += len(rows)
        return counts

    async def _run(self) -> None:
        while True:
            if self.clock() - self._synced_at >= self.settings.suppression_sync_s:
                try:
                    await self.sync_suppressions()
                except ProviderError as exc:
                    log.warning("suppression_sync_failed", error=exc.kind)
                    self._synced_at -= self.settings.suppression_sync_s - SYNC_RETRY_S
            try:
                result = await self.tick(draft=False)
            except Exception:  # a bad tick must not end the dispatcher; the rows wait
                log.exception("sequence_tick_failed")
                result = TickResult()
            if result.claimed >= self.settings.sequence_batch:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.sequence_tick_s)

    async def tick(self, *, draft: bool = True) -> TickResult:
        """One pass: resolve ambiguous sends, claim what is due, send it, record it. While
        the SendGrid budget is spent (or its breaker open) nothing is claimed, and claimed
        steps that found it spent go back to `scheduled` together."""
        result = TickResult()
        if draft:  # the running dispatcher drafts in a loop of its own
            result.drafted = await self.draft_pending()
        now = self.clock()
        result.resent = await self.resolve_ambiguous(now)
        if now < self._hold_until:
            return result
        claimed = await self.claim(now, result)
        if not claimed:
            return result
        claimed = await self.recheck(claimed, result)
        gate = asyncio.Semaphore(self.settings.sequence_send_concurrency)
        held: list[Claimed] = []

        async def one(items: list[Claimed]) -> None:
            async with gate:
                if self.clock() < self._hold_until:
                    held.extend(items)
                else:
                    await self.send(items, result, held)

        await asyncio.gather(
            *(one(b) for b in batches(claimed, self.settings.sequence_personalizations))
        )
        if held:
            result.retried += len(held)
            await self._release(held, self._hold_until)
        return result

    async def draft_pending(self) -> int:
        """Writes the drafts of AI steps that have none yet; returns how many are ready."""
        if self.drafter is None:
            return 0
        pending = await self.drafter.pending(self.settings.sequence_batch)
        gate = asyncio.Semaphore(self.settings.sequence_send_concurrency)
        drafter = self.drafter

        async def one(item: Any) -> str:
            async with gate:
                return await drafter.write(item)

        outcomes = await asyncio.gather(*(one(p) for p in pending))
        return sum(o == READY for o in outcomes)

    async def resolve_ambiguous(self, now: float) -> int:
        """Steps `sending` for longer than the ambiguity window with no `processed` event:
        scheduled again (or ended, if their enrolment has ended meanwhile). The window also
        runs from this process's start: events SendGrid retried while we were down get that
        long to arrive before anything is sent again."""
        cutoff = now - self.settings.sequence_ambiguity_s
        if self._started_at > cutoff:
            return 0
        async with self.db.write_session() as session:
            stale = list(
                await session.scalars(
                    select(SequenceSend)
                    .where(SequenceSend.state == "sending", SequenceSend.claimed_at < cutoff)
                    .order_by(SequenceSend.id)
                    .limit(self.settings.sequence_batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not stale:
                return 0
            statuses = dict(
                (
                    await session.execute(
                        select(Enrollment.id, Enrollment.status).where(
                            Enrollment.id.in_({s.enrollment_id for s in stale})
                        )
                    )
                ).all()
            )
            # No event within the window: taken as not sent, so not paid for.
            await billing.release(session, [(send.id, send.attempts) for send in stale])
            for send in stale:
                status = statuses.get(send.enrollment_id)
                if status in service.ACTIVE:
                    send.state = "scheduled"
                    send.due_at = now if status == "active" else None
                    service.note(
                        session, send.enrollment_id, "resend", now, send.step, "outcome unknown"
                    )
                else:
                    send.state = "stopped"
                    send.outcome = "outcome_unknown"
            return len(stale)

    async def claim(self, now: float, result: TickResult) -> list[Claimed]:
        """Checks every rule and marks the steps that may go `sending`, in one transaction."""
        async with self.db.write_session() as session:
            due = list(
                await session.scalars(
                    select(SequenceSend)
                    .where(
                        SequenceSend.state == "scheduled",
                        SequenceSend.due_at <= now,
                        # A paused sender's steps keep their due time and wait here.
                        SequenceSend.sender_id.not_in(
                            select(Sender.id).where(Sender.paused.is_(True))
                        ),
                    )
                    .order_by(SequenceSend.due_at, SequenceSend.id)
                    .limit(self.settings.sequence_batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not due:
                return []
            enrollments = {
                e.id: e
                for e in await session.scalars(
                    select(Enrollment).where(Enrollment.id.in_({s.enrollment_id for s in due}))
                )
            }
            sequences = {
                q.id: q
                for q in await session.scalars(
                    select(SequenceDef).where(
                        SequenceDef.id.in_({e.sequence_id for e in enrollments.values()})
                    )
                )
            }
            senders = {
                s.id: s
                for s in await session.scalars(
                    select(Sender)
                    .where(Sender.id.in_({s.sender_id for s in due}))
                    .order_by(Sender.id)
                    .with_for_update()
                )
            }
            # Senders, then credits (billing.py's lock order): the holds below lock no
            # balance row this transaction does not already have.
            await billing.lock_balances(session, {s.user_id for s in due})
            users = {
                u.id: u
                for u in await session.scalars(
                    select(User).where(User.id.in_({s.user_id for s in due}))
                )
            }
            barred = await suppressions.barred(session, {(s.user_id, s.email) for s in due})
            drafts = {
                d.id: d
                for d in await session.scalars(
                    select(Draft).where(Draft.id.in_({s.draft_id for s in due if s.draft_id}))
                )
            }
            pairs = {(s.user_id, s.domain) for s in due}
            per_domain: Counter[tuple[str, str]] = Counter(
                {
                    (u, d): n
                    for u, d, n in (
                        await session.execute(
                            select(SequenceSend.user_id, SequenceSend.domain, func.count())
                            .where(
                                tuple_(SequenceSend.user_id, SequenceSend.domain).in_(pairs),
                                SequenceSend.claimed_at > now - 3600,
                                SequenceSend.state.in_(("sending", "sent")),
                            )
                            .group_by(SequenceSend.user_id, SequenceSend.domain)
                        )
                    ).all()
                }
            )
            claimed: list[Claimed] = []
            broke: set[str] = set()
            to_end: dict[str, list[str]] = {"suppressed": [], "failed": []}
            for send in due:
                enrollment = enrollments[send.enrollment_id]
                if enrollment.status != "active":
                    send.due_at = None
                    continue
                if (send.user_id, send.email) in barred:
                    send.state = "suppressed"
                    send.outcome = "suppressed"
                    to_end["suppressed"].append(enrollment.id)
                    continue
                sequence = sequences[enrollment.sequence_id]
                sender = senders.get(send.sender_id)
                if sender is None:
                    send.state = "failed"
                    send.outcome = "no_sender"
                    to_end["failed"].append(enrollment.id)
                    continue
                if sender.paused:
                    continue
                today = local_day(now, sender.timezone)
                if sender.day != today:
                    sender.day, sender.sent_today = today, 0
                if sender.sent_today >= daily_cap(sender, now):
                    send.due_at = next_midnight(now, sender.timezone) + self.rng.uniform(0, 600)
                    continue
                opens = next_open(now, sequence.window, enrollment.timezone or sequence.timezone)
                if opens > now:
                    send.due_at = opens
                    continue
                if sender.next_free_at > now:
                    send.due_at = sender.next_free_at
                    continue
                if per_domain[(send.user_id, send.domain)] >= sequence.domain_hourly_limit:
                    send.due_at = now + DOMAIN_RECHECK_S
                    continue
                text: tuple[str, str] | None = None
                if send.draft_state is not None:
                    draft = drafts.get(send.draft_id or "")
                    text = text_of(draft) if draft is not None else None
                    if text is None:
                        send.due_at = now + DRAFT_RECHECK_S
                        if send.draft_state == PENDING:
                            self._waiting(session, enrollment, "draft", now, send.step, result)
                        continue
                send.attempts += 1
                if send.user_id in broke or not await billing.hold(session, self.settings, send):
                    broke.add(send.user_id)
                    send.attempts -= 1
                    send.due_at = now + CREDITS_RECHECK_S
                    self._waiting(session, enrollment, "credits", now, send.step, result)
                    continue
                if enrollment.waiting_for is not None:
                    enrollment.waiting_for = None
                per_domain[(send.user_id, send.domain)] += 1
                sender.sent_today += 1
                sender.next_free_at = now + sender.min_gap_s + self.rng.uniform(0, sender.jitter_s)
                send.state = "sending"
                send.claimed_at = now
                service.note(session, enrollment.id, "sending", now, send.step)
                claimed.append(
                    self.claimed(send, enrollment, sequence, sender, users[send.user_id], text)
                )
            for reason, ids in to_end.items():
                result.ended[reason] += await service.end_enrollments(session, ids, reason, now)
            result.claimed = len(claimed)
            return claimed

    def _waiting(
        self,
        session: Any,
        enrollment: Enrollment,
        what: str,
        now: float,
        step: int,
        result: TickResult,
    ) -> None:
        """The step waits for credits or its draft: said once on the enrolment and its
        timeline, until it goes."""
        result.waiting[what] += 1
        if enrollment.waiting_for != what:
            enrollment.waiting_for = what
            service.note(session, enrollment.id, f"waiting_for_{what}", now, step)

    def claimed(
        self,
        send: SequenceSend,
        enrollment: Enrollment,
        sequence: SequenceDef,
        sender: Sender,
        user: User,
        drafted: tuple[str, str] | None,
    ) -> Claimed:
        """The step's request parts. A template step's body is shared by every recipient of
        the step, its variables as substitution tags; an AI step's body is its draft."""
        step = sequence.steps[send.step]
        contact = {**enrollment.contact, "email": send.email, "domain": send.domain}
        link = f"{self.public_url}/unsubscribe/{self.signer.token(send.user_id, send.email)}"
        sender_block: dict[str, str] = {"email": sender.email}
        if sender.name:
            sender_block["name"] = sender.name
        personalization: dict[str, Any] = {
            "to": [{"email": send.email}],
            "custom_args": {
                "send_id": send.id,
                "enrollment_id": enrollment.id,
                "step": str(send.step),
            },
            "headers": {
                "List-Unsubscribe": f"<{link}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }
        if drafted is None:
            subject, body = step["subject"], step["body"]
            used = service.variables(body)
            if used:
                personalization["substitutions"] = {tag(v): str(contact.get(v) or "") for v in used}
            body = service.render(body, {v: tag(v) for v in used})
            key: tuple[str, ...] = (sequence.id, str(send.step), sender.id)
        else:
            subject, body = drafted
            key = (send.id,)
        personalization["subject"] = service.render(subject, contact)
        return Claimed(
            send.id,
            enrollment.id,
            send.user_id,
            send.step,
            send.email,
            send.attempts,
            key,
            {
                "from": sender_block,
                "reply_to": {"email": user.email},
                "content": [{"type": "text/plain", "value": body}],
            },
            personalization,
        )

    async def recheck(self, claimed: list[Claimed], result: TickResult) -> list[Claimed]:
        """After the claim committed: a suppression or stop committed before it is now
        visible (PostgreSQL's READ COMMITTED may have hidden it from the claim), and the
        step ends unsent."""
        async with self.db.write_session() as session:
            barred = await suppressions.barred(session, {(c.user_id, c.email) for c in claimed})
            inactive = set(
                await session.scalars(
                    select(Enrollment.id).where(
                        Enrollment.id.in_({c.enrollment_id for c in claimed}),
                        Enrollment.status != "active",
                    )
                )
            )
            keep: list[Claimed] = []
            drop: dict[str, str] = {}
            for item in claimed:
                if (item.user_id, item.email) in barred:
                    drop[item.send_id] = "suppressed"
                elif item.enrollment_id in inactive:
                    drop[item.send_id] = "stopped"
                else:
                    keep.append(item)
            if not drop:
                return keep
            now = self.clock()
            await billing.release(
                session, [(c.send_id, c.attempt) for c in claimed if c.send_id in drop]
            )
            for state in ("suppressed", "stopped"):
                ids = [s for s, st in drop.items() if st == state]
                if ids:
                    await session.execute(
                        update(SequenceSend)
                        .where(SequenceSend.id.in_(ids), SequenceSend.state == "sending")
                        .values(state=state, outcome=state)
                    )
                    result.ended[state] += len(ids)
            suppressed_enrollments = [
                c.enrollment_id for c in claimed if drop.get(c.send_id) == "suppressed"
            ]
            await service.end_enrollments(session, suppressed_enrollments, "suppressed", now)
            return keep

    async def send(
        self, items: list[Claimed], result: TickResult, held: list[Claimed] | None = None
    ) -> None:
        """Sends claimed steps as one request and records the outcome. A refusal that proves
        nothing left (budget spent, breaker open, 429, connection refused) holds the
        dispatcher for the wait it named and puts the steps in `held` (or back at once). A
        request SendGrid refuses as a whole is tried again one step at a time, so one bad
        recipient fails alone."""
        result.requests += 1
        try:
            message_id = await self.client.send_once(
                batch_message(items), deadline=Deadline(SEND_DEADLINE_S)
            )
        except SendOutcomeUnknown as exc:
            result.unknown += len(items)
            await self._record_unknown(items, exc)
            return
        except (Refusal, ProviderError) as exc:
            if isinstance(exc, Refusal) or exc.retryable:
                wait = float(getattr(exc, "retry_in", None) or exc.retry_after or 1.0)
                self._hold_until = max(self._hold_until, self.clock() + wait)
                if held is not None:
                    held.extend(items)
                else:
                    result.retried += len(items)
                    await self._release(items, self._hold_until)
            elif len(items) > 1:
                for item in items:
                    await self.send([item], result, held)
            else:
                await self._record_failed(items[0], exc)
                result.ended["failed"] += 1
            return
        async with self.db.write_session() as session:
            sends = await session.scalars(
                select(SequenceSend)
                .where(SequenceSend.id.in_([i.send_id for i in items]))
                .order_by(SequenceSend.id)
                .with_for_update()
            )
            now = self.clock()
            for send in sends:
                await service.mark_sent(session, send, message_id, now)
        result.sent += len(items)

    async def _record_unknown(self, items: list[Claimed], exc: ProviderError) -> None:
        async with self.db.write_session() as session:
            for item in items:
                service.note(
                    session,
                    item.enrollment_id,
                    "outcome_unknown",
                    self.clock(),
                    item.step,
                    exc.kind,
                )

    async def _release(self, items: list[Claimed], due_at: float) -> None:
        """Steps refused before anything left: back to `scheduled`, their cap slots and
        credits returned."""
        async with self.db.write_session() as session:
            moved = await session.execute(
                update(SequenceSend)
                .where(
                    SequenceSend.id.in_([i.send_id for i in items]),
                    SequenceSend.state == "sending",
                )
                .values(state="scheduled", due_at=due_at)
                .returning(SequenceSend.id, SequenceSend.sender_id)
            )
            rows = moved.all()
            attempts = {i.send_id: i.attempt for i in items}
            # Senders before credits: billing.py's lock order.
            for sender_id, count in sorted(Counter(sender for _, sender in rows).items()):
                await session.execute(
                    update(Sender)
                    .where(Sender.id == sender_id)
                    .values(
                        sent_today=case(
                            (Sender.sent_today > count, Sender.sent_today - count), else_=0
                        )
                    )
                )
            await billing.release(session, [(id_, attempts[id_]) for id_, _ in rows])

    async def _record_failed(self, item: Claimed, exc: ProviderError) -> None:
        now = self.clock()
        async with self.db.write_session() as session:
            failed = await session.execute(
                update(SequenceSend)
                .where(SequenceSend.id == item.send_id, SequenceSend.state == "sending")
                .values(state="failed", outcome=exc.kind, detail=exc.message[:500])
            )
            if failed.rowcount:  # type: ignore[attr-defined]
                await billing.release(session, [(item.send_id, item.attempt)])
            service.note(session, item.enrollment_id, "failed", now, item.step, exc.message)
            await service.end_enrollments(session, [item.enrollment_id], "failed", now)
