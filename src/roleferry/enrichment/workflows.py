"""The durable part: one DBOS workflow per job, on a queue partitioned by user so that one
user's 10,000 contacts never starve another's 20. The workflow only orchestrates; each step
does one chunk of I/O and saves its answers before returning, so a process killed at any
point resumes at the chunk it was in, and no saved contact is done again.

A step that raises is retried by DBOS with backoff; one that keeps failing fails the job with
the reason, and its owner is told: a job never stays `running` with nothing running it. A
cancel is a state in our database, not a DBOS cancel: the running chunk sees it, stops, and
the workflow ends at once, which frees the user's slot on the queue. A job whose contacts
all wait longer than HOLD_S for providers gives its slot back too: `resume_later` sleeps off
the queue, durably, then queues the job again (the user's next job runs meanwhile). A job
without the credits it needs waits the same way (payments/jobs.py), woken at once when its
user is credited, and settles its credits to what it found when it ends.

The callback runs as a workflow of its own, started with an id derived from the job's (so it
is started once however many paths reach it), off the queue: its retries never hold the
user's slot.

DBOS steps take only plain arguments; they reach this process's database and providers
through `bind()`, called once at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog
from dbos import DBOS, SendMessage, SetEnqueueOptions, SetWorkflowID

from roleferry.enrichment import service
from roleferry.enrichment.bulk import BulkEnricher
from roleferry.enrichment.models import EnrichmentJob
from roleferry.waterfall.engine import Waterfall

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

log = structlog.get_logger(__name__)
QUEUE = "enrichment"
STEP_ATTEMPTS = 4
STEP_RETRY_S = 1.0
"""A failing step is tried 4 times, 1, 2 and 4 s apart, before the job fails."""
HOLD_S = 5.0
"""A job that must wait longer than this gives its user's queue slot back while it sleeps."""
WAKE = "wake"
"""The topic that ends a `resume_later` wait early."""
_runtime: dict[str, Runtime] = {}


def bind(runtime: Runtime) -> None:
    _runtime["current"] = runtime


def _current() -> Runtime:
    return _runtime["current"]


async def register_queue() -> None:
    """After launch: one job per user at a time per process, four jobs in all."""
    await DBOS.register_queue_async(
        QUEUE, worker_concurrency=4, partition_worker_concurrency=1, polling_interval_sec=0.2
    )


async def enqueue(
    job_id: str, user_id: str, *, workflow_id: str | None = None, resumed: bool = False
) -> None:
    """Queues the job's workflow; the workflow id is the job id (or, for a resume, derived
    from the sleeping workflow's), so enqueueing a job that is already queued, running or
    done changes nothing."""
    queue = await DBOS.retrieve_queue_async(QUEUE)
    if queue is None:
        raise RuntimeError(f"the {QUEUE} queue is not registered")
    with SetWorkflowID(workflow_id or job_id), SetEnqueueOptions(queue_partition_key=user_id):
        await queue.enqueue_async(enrichment_workflow, job_id, resumed)


async def start_callback(job_id: str) -> None:
    """Starts the job's callback delivery, once per job whoever asks."""
    with SetWorkflowID(f"{job_id}-callback"):
        await DBOS.start_workflow_async(callback_workflow, job_id)


def failure_reason(exc: BaseException) -> str:
    """What went wrong, for the job's `reason`: the last error of a step that kept failing,
    its first line only (database errors carry their statement on the next lines)."""
    errors = getattr(exc, "errors", None)
    last = errors[-1] if errors else exc
    first_line = (str(last).strip().splitlines() or [""])[0][:300]
    return f"{type(last).__name__}: {first_line}" if first_line else type(last).__name__


_RETRIES: dict[str, Any] = {
    "retries_allowed": True,
    "max_attempts": STEP_ATTEMPTS,
    "interval_seconds": STEP_RETRY_S,
    "backoff_rate": 2.0,
}


@DBOS.step(**_RETRIES)
async def start_step(job_id: str) -> bool:
    runtime = _current()
    return await service.mark_running(runtime.db, job_id, runtime.clock())


@DBOS.step(**_RETRIES)
async def chunk_step(job_id: str) -> dict[str, Any]:
    runtime = _current()
    providers = runtime.providers
    assert providers is not None
    enricher = BulkEnricher(
        runtime.db,
        Waterfall.of(providers, runtime.settings),
        runtime.settings.search_cache_ttl_s,
        runtime.clock,
        runtime.settings.enrichment_backoff_s,
        verifier=next(iter(providers.email_verifiers.values()), None),
    )
    result = await enricher.run(job_id)
    return {
        "remaining": result.remaining,
        "wait_s": result.wait_s,
        "over": result.cancelled,
        "user_id": result.user_id,
    }


@DBOS.step(**_RETRIES)
async def credits_step(job_id: str) -> dict[str, Any]:
    """Holds the job's credits; a wait when they are not there (payments/jobs.py)."""
    from roleferry.payments import jobs

    wait_s, user_id = await jobs.hold(_current(), job_id)
    return {"wait_s": wait_s, "user_id": user_id}


@DBOS.step(**_RETRIES)
async def settle_step(job_id: str) -> int:
    """Spends what the job found out of its hold and releases the rest."""
    from roleferry.payments import jobs

    return await jobs.settle(_current(), job_id)


@DBOS.step(**_RETRIES)
async def finish_step(job_id: str) -> dict[str, Any] | None:
    runtime = _current()
    return await service.finish(runtime.db, job_id, runtime.clock())


@DBOS.step(**_RETRIES)
async def fail_step(job_id: str, reason: str) -> dict[str, Any] | None:
    runtime = _current()
    log.error("enrichment_job_failed", job_id=job_id, reason=reason)
    return await service.fail(runtime.db, job_id, reason, runtime.clock())


@DBOS.step(**_RETRIES)
async def has_callback_step(job_id: str) -> bool:
    async with _current().db.session() as session:
        job = await session.get(EnrichmentJob, job_id)
        return job is not None and bool(job.callback_url)


@DBOS.step(**_RETRIES)
async def summary_step(job_id: str) -> dict[str, Any]:
    async with _current().db.session() as session:
        return await service.summary(session, job_id)


@DBOS.step(retries_allowed=True, max_attempts=10, interval_seconds=5.0, backoff_rate=2.0)
async def callback_step(job_id: str, summary: dict[str, Any]) -> None:
    from roleferry.notifications import callbacks

    runtime = _current()
    await callbacks.deliver(runtime, job_id, summary)


@DBOS.workflow()
async def callback_workflow(job_id: str) -> None:
    summary = await summary_step(job_id)
    if summary.get("callback_url"):
        await callback_step(job_id, summary)


@DBOS.workflow()
async def enrichment_workflow(job_id: str, resumed: bool = False) -> str:
    try:
        if resumed or await start_step(job_id):
            credits = await credits_step(job_id)
            if credits["wait_s"] > 0:
                await wait_off_the_queue(job_id, credits["user_id"], credits["wait_s"])
                return "waiting for credits"
            while True:
                progress = await chunk_step(job_id)
                if progress["over"] or progress["remaining"] == 0:
                    break
                if progress["wait_s"] > HOLD_S:
                    await wait_off_the_queue(job_id, progress["user_id"], progress["wait_s"])
                    return "waiting"
                if progress["wait_s"] > 0:
                    await DBOS.sleep_async(progress["wait_s"])
            await settle_step(job_id)
            await finish_step(job_id)
    except Exception as exc:  # a step that kept failing: the job fails, it does not hang
        await fail_step(job_id, failure_reason(exc))
        await settle_step(job_id)
    if await has_callback_step(job_id):
        await start_callback(job_id)
    return "closed"


async def wait_off_the_queue(job_id: str, user_id: str, wait_s: float) -> None:
    """Starts the job's `resume_later`, its id the running workflow's plus `-wait`: every
    workflow of a job has an id that starts with the job's, which is how `wake` finds them."""
    with SetWorkflowID(f"{DBOS.workflow_id}-wait"):
        await DBOS.start_workflow_async(resume_later, job_id, user_id, wait_s)


@DBOS.workflow()
async def resume_later(job_id: str, user_id: str, wait_s: float) -> None:
    """Waits durably off the queue (so the user's next job can run meanwhile) until `wait_s`
    has passed or `wake` ends the wait, then queues the job again in its user's partition."""
    await DBOS.recv_async(WAKE, min(wait_s, 3600.0))
    await enqueue(job_id, user_id, workflow_id=f"{DBOS.workflow_id}-resume", resumed=True)


async def wake(job_ids: list[str]) -> int:
    """Ends the waits of these jobs now (credits were bought for them); returns how many
    were waiting."""
    waiting = await DBOS.list_workflows_async(
        workflow_id_prefix=[f"{job_id}-" for job_id in job_ids],
        status="PENDING",
        name=resume_later.__qualname__,
        load_input=False,
        load_output=False,
    )
    if waiting:
        await DBOS.send_bulk_async([SendMessage(w.workflow_id, "wake", WAKE) for w in waiting])
    return len(waiting)
