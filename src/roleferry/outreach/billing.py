"""Credits for sequence emails: each claim of a step holds the price of one `email_sent`
(reference `email_sent:<send_id>:<attempt>`), in the claim's transaction; the hold is spent
when the step becomes `sent` and released when it is proven not to have gone (refused,
suppressed or stopped before the call, failed with an answer that proves nothing was
queued, scheduled again after the ambiguity window). So a sent email costs exactly once, a
crash or a retry adds nothing, and an email that never went costs nothing.

Lock order, in every transaction that touches sequence sends and credits (the dispatcher's
claim, release and record, the webhook processor's events): sequence sends, then senders (by
id), then the users' credit balances (by user id), last. PostgreSQL deadlocks when two
transactions take two of these in opposite orders: a claim holding a sender and waiting for a
balance while an event batch held that balance (spent when marking a step sent) and waited for
the sender (its bounce-rate check)."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncSession

from roleferry.outreach.models import SequenceSend
from roleferry.payments.credits import Credits, PaymentRequired
from roleferry.payments.ledger import Ledger
from roleferry.payments.settings import PaymentSettings

KIND = "email_sent"


def reference(send_id: str, attempt: int) -> str:
    return f"{KIND}:{send_id}:{attempt}"


async def lock_balances(session: AsyncSession, user_ids: Iterable[str]) -> None:
    """Takes the users' credit rows, last in the lock order (above), before holding, spending
    or releasing any of them."""
    await Ledger(session).lock_balances(user_ids)


async def hold(session: AsyncSession, settings: PaymentSettings, send: SequenceSend) -> bool:
    """Holds the price of this attempt (call after `attempts` is counted up); False when the
    user's credits do not cover it, with nothing written."""
    try:
        await Credits(session, settings).reserve(
            send.user_id, KIND, 1, reference(send.id, send.attempts)
        )
    except PaymentRequired:
        return False
    return True


async def spend(session: AsyncSession, send: SequenceSend) -> None:
    """The step went: its attempt's hold is spent (once, whoever records it first)."""
    ledger = Ledger(session)
    held = await ledger.reservation(reference(send.id, send.attempts))
    if held is None or held.status != "open":
        return
    await ledger.commit(held, held.held, f"{held.reference}:sent")
    await ledger.release(held)


async def release(session: AsyncSession, sends: Iterable[tuple[str, int]]) -> None:
    """Steps `(send_id, attempt)` that did not go: their holds go back to their users, whose
    balances are locked first in user order (several users' steps may be released at once)."""
    ledger = Ledger(session)
    holds = [
        held
        for send_id, attempt in sorted(sends)
        if (held := await ledger.reservation(reference(send_id, attempt))) is not None
    ]
    await ledger.lock_balances(h.user_id for h in holds)
    for held in holds:
        await ledger.release(held)
