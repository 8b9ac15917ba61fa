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
window open, the recipient's domain under the sequence's hourly limit. A step that may not go
yet gets a new `due_at` (the window's opening, the next UTC day, the sender's next free time)
rather than being polled.
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
from roleferry.outreach import service, suppressions
from roleferry.outreach.links import Signer
from roleferry.outreach.models import (
    Enrollment,
    Sender,
    SequenceDef,
    SequenceSend,
)
from roleferry.outreach.windows import next_open
from roleferry.providers.errors import ProviderError, Refusal
from roleferry.providers.sendgrid.client import SendGridClient, SendOutcomeUnknown
from roleferry.resilience.deadline import Deadline
from roleferry.users.models import User

log = structlog.get_logger(__name__)

DAY_S = 86_400.0
DOMAIN_RECHECK_S = 60.0
SEND_DEADLINE_S = 30.0
SYNC_PAGE = 500
SYNC_RETRY_S = 60.0


def daily_cap(sender: Sender, now: float) -> int:
    """The warm-up ramp: `warmup_start` on day 0, `warmup_step` more each day, up to the cap."""
    days = max(0, int((now - sender.started_at) // DAY_S))
    return min(sender.daily_cap, sender.warmup_start + sender.warmup_step * days)


@dataclass
class Claimed:
    send_id: str
    enrollment_id: str
    user_id: str
    step: int
    email: str
    message: dict[str, Any]


@dataclass
class TickResult:
    claimed: int = 0
    sent: int = 0
    unknown: int = 0
    retried: int = 0
    ended: Counter[str] = field(default_factory=Counter)
    resent: int = 0


class Dispatcher:
    def __init__(
        self,
        database: Database,
        client: SendGridClient,
        settings: Settings,
        public_url: str,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.db = database
        self.client = client
        self.settings = settings
        self.public_url = public_url.rstrip("/")
        self.clock = clock
        self.rng = rng or random.Random()
        self.signer = Signer.of(settings)
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._synced_at = 0.0
        self._started_at = clock()
        self._hold_until = 0.0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="sequence-dispatcher")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None

    def wake(self) -> None:
        """New due steps (an enrolment, a resume): look now rather than at the next tick."""
        self._wake.set()

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
                result = await self.tick()
            except Exception:  # a bad tick must not end the dispatcher; the rows wait
                log.exception("sequence_tick_failed")
                result = TickResult()
            if result.claimed >= self.settings.sequence_batch:
                continue
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.settings.sequence_tick_s)

    async def tick(self) -> TickResult:
        """One pass: resolve ambiguous sends, claim what is due, send it, record it. While
        the SendGrid budget is spent (or its breaker open) nothing is claimed, and claimed
        steps that found it spent go back to `scheduled` together."""
        result = TickResult()
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

        async def one(item: Claimed) -> None:
            async with gate:
                if self.clock() < self._hold_until:
                    held.append(item)
                else:
                    await self.send(item, result, held)

        await asyncio.gather(*(one(c) for c in claimed))
        if held:
            result.retried += len(held)
            await self._release(held, self._hold_until)
        return result

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
            users = {
                u.id: u
                for u in await session.scalars(
                    select(User).where(User.id.in_({s.user_id for s in due}))
                )
            }
            barred = await suppressions.barred(session, {(s.user_id, s.email) for s in due})
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
                today = int(now // DAY_S)
                if sender.day != today:
                    sender.day, sender.sent_today = today, 0
                if sender.sent_today >= daily_cap(sender, now):
                    send.due_at = (today + 1) * DAY_S + self.rng.uniform(0, 600)
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
                per_domain[(send.user_id, send.domain)] += 1
                sender.sent_today += 1
                sender.next_free_at = now + sender.min_gap_s + self.rng.uniform(0, sender.jitter_s)
                send.state = "sending"
                send.claimed_at = now
                send.attempts += 1
                service.note(session, enrollment.id, "sending", now, send.step)
                claimed.append(
                    Claimed(
                        send.id,
                        enrollment.id,
                        send.user_id,
                        send.step,
                        send.email,
                        self.message(send, enrollment, sequence, sender, users[send.user_id]),
                    )
                )
            for reason, ids in to_end.items():
                result.ended[reason] += await service.end_enrollments(session, ids, reason, now)
            result.claimed = len(claimed)
            return claimed

    def message(
        self,
        send: SequenceSend,
        enrollment: Enrollment,
        sequence: SequenceDef,
        sender: Sender,
        user: User,
    ) -> dict[str, Any]:
        step = sequence.steps[send.step]
        contact = {**enrollment.contact, "email": send.email, "domain": send.domain}
        link = f"{self.public_url}/unsubscribe/{self.signer.token(send.user_id, send.email)}"
        sender_block: dict[str, str] = {"email": sender.email}
        if sender.name:
            sender_block["name"] = sender.name
        return {
            "personalizations": [
                {
                    "to": [{"email": send.email}],
                    "custom_args": {
                        "send_id": send.id,
                        "enrollment_id": enrollment.id,
                        "step": str(send.step),
                    },
                }
            ],
            "from": sender_block,
            "reply_to": {"email": user.email},
            "subject": service.render(step["subject"], contact),
            "content": [{"type": "text/plain", "value": service.render(step["body"], contact)}],
            "headers": {
                "List-Unsubscribe": f"<{link}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        }

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
        self, item: Claimed, result: TickResult, held: list[Claimed] | None = None
    ) -> None:
        """Sends one claimed step and records the outcome. A refusal that proves nothing
        left (budget spent, breaker open, 429, connection refused) holds the dispatcher
        for the wait it named and puts the step in `held` (or back at once)."""
        try:
            message_id = await self.client.send_once(
                item.message, deadline=Deadline(SEND_DEADLINE_S)
            )
        except SendOutcomeUnknown as exc:
            result.unknown += 1
            await self._record_unknown(item, exc)
            return
        except (Refusal, ProviderError) as exc:
            if isinstance(exc, Refusal) or exc.retryable:
                wait = float(getattr(exc, "retry_in", None) or exc.retry_after or 1.0)
                self._hold_until = max(self._hold_until, self.clock() + wait)
                if held is not None:
                    held.append(item)
                else:
                    result.retried += 1
                    await self._release([item], self._hold_until)
            else:
                await self._record_failed(item, exc)
                result.ended["failed"] += 1
            return
        async with self.db.write_session() as session:
            send = await session.get(SequenceSend, item.send_id, with_for_update=True)
            if send is not None:
                await service.mark_sent(session, send, message_id, self.clock())
        result.sent += 1

    async def _record_unknown(self, item: Claimed, exc: ProviderError) -> None:
        async with self.db.write_session() as session:
            service.note(
                session, item.enrollment_id, "outcome_unknown", self.clock(), item.step, exc.kind
            )

    async def _release(self, items: list[Claimed], due_at: float) -> None:
        """Steps refused before anything left: back to `scheduled`, their cap slots returned."""
        async with self.db.write_session() as session:
            moved = await session.execute(
                update(SequenceSend)
                .where(
                    SequenceSend.id.in_([i.send_id for i in items]),
                    SequenceSend.state == "sending",
                )
                .values(state="scheduled", due_at=due_at)
                .returning(SequenceSend.sender_id)
            )
            for sender_id, count in sorted(Counter(moved.scalars()).items()):
                await session.execute(
                    update(Sender)
                    .where(Sender.id == sender_id)
                    .values(
                        sent_today=case(
                            (Sender.sent_today > count, Sender.sent_today - count), else_=0
                        )
                    )
                )

    async def _record_failed(self, item: Claimed, exc: ProviderError) -> None:
        now = self.clock()
        async with self.db.write_session() as session:
            await session.execute(
                update(SequenceSend)
                .where(SequenceSend.id == item.send_id, SequenceSend.state == "sending")
                .values(state="failed", outcome=exc.kind, detail=exc.message[:500])
            )
            service.note(session, item.enrollment_id, "failed", now, item.step, exc.message)
            await service.end_enrollments(session, [item.enrollment_id], "failed", now)
