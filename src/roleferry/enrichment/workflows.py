"""The durable part: one DBOS workflow per job, on a queue partitioned by user so that one
user's 10,000 contacts never starve another's 20. The workflow only orchestrates; each step
does one chunk of I/O and saves its answers before returning, so a process killed at any
point resumes at the chunk it was in, and no saved contact is done again.

DBOS steps take only plain arguments; they reach this process's database and providers
through `bind()`, called once at start.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbos import DBOS, SetEnqueueOptions, SetWorkflowID

from roleferry.enrichment import service
from roleferry.enrichment.bulk import MAX_WAIT_S, BulkEnricher
from roleferry.waterfall.engine import Waterfall

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

QUEUE = "enrichment"
HOLD_S = 5.0
"""A job that must wait longer than this gives its user's queue slot back while it sleeps."""
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
    job_id: str,
    user_id: str,
    max_wait_s: float = MAX_WAIT_S,
    *,
    workflow_id: str | None = None,
    resumed: bool = False,
) -> None:
    queue = await DBOS.retrieve_queue_async(QUEUE)
    if queue is None:
        raise RuntimeError(f"the {QUEUE} queue is not registered")
    with SetWorkflowID(workflow_id or job_id), SetEnqueueOptions(queue_partition_key=user_id):
        await queue.enqueue_async(enrichment_workflow, job_id, max_wait_s, resumed)


@DBOS.step()
async def start_step(job_id: str) -> bool:
    runtime = _current()
    return await service.mark_running(runtime.db, job_id, runtime.clock())


@DBOS.step()
async def chunk_step(job_id: str, max_wait_s: float = MAX_WAIT_S) -> dict[str, Any]:
    runtime = _current()
    providers = runtime.providers
    assert providers is not None
    enricher = BulkEnricher(
        runtime.db,
        Waterfall.of(providers, runtime.settings),
        runtime.settings.search_cache_ttl_s,
        runtime.clock,
        runtime.settings.enrichment_backoff_s,
        max_wait_s,
    )
    result = await enricher.run(job_id)
    return {
        "remaining": result.remaining,
        "wait_s": result.wait_s,
        "cancelled": result.cancelled,
        "user_id": result.user_id,
    }


@DBOS.step()
async def credits_step(job_id: str) -> dict[str, Any]:
    """Holds the job's credits; a wait when they are not there (payments/jobs.py)."""
    from roleferry.payments import jobs

    wait_s, user_id = await jobs.hold(_current(), job_id)
    return {"wait_s": wait_s, "user_id": user_id}


@DBOS.step()
async def settle_step(job_id: str) -> int:
    from roleferry.payments import jobs

    return await jobs.settle(_current(), job_id)


@DBOS.step()
async def finish_step(job_id: str) -> dict[str, Any]:
    runtime = _current()
    return await service.finish(runtime.db, job_id, runtime.clock())


@DBOS.step(retries_allowed=True, max_attempts=10, interval_seconds=5.0, backoff_rate=2.0)
async def callback_step(job_id: str, summary: dict[str, Any]) -> None:
    from roleferry.notifications import callbacks

    runtime = _current()
    await callbacks.deliver(runtime, job_id, summary)


@DBOS.workflow()
async def enrichment_workflow(
    job_id: str, max_wait_s: float = MAX_WAIT_S, resumed: bool = False
) -> str:
    if not resumed and not await start_step(job_id):
        return "cancelled"
    credits = await credits_step(job_id)
    if credits["wait_s"] > 0:
        await DBOS.start_workflow_async(
            resume_later, job_id, credits["user_id"], credits["wait_s"], max_wait_s
        )
        return "waiting for credits"
    while True:
        progress = await chunk_step(job_id, max_wait_s)
        if progress["cancelled"] or progress["remaining"] == 0:
            break
        if progress["wait_s"] > HOLD_S:
            await DBOS.start_workflow_async(
                resume_later, job_id, progress["user_id"], progress["wait_s"], max_wait_s
            )
            return "waiting"
        if progress["wait_s"] > 0:
            await DBOS.sleep_async(progress["wait_s"])
    await settle_step(job_id)
    summary = await finish_step(job_id)
    if summary.get("callback_url"):
        await callback_step(job_id, summary)
    return str(summary["status"])


@DBOS.workflow()
async def resume_later(job_id: str, user_id: str, wait_s: float, max_wait_s: float) -> None:
    """Sleeps durably off the queue (so the user's next job can run meanwhile), then queues
    the job again in its user's partition."""
    await DBOS.sleep_async(min(wait_s, 3600.0))
    await enqueue(
        job_id, user_id, max_wait_s, workflow_id=f"{DBOS.workflow_id}-resume", resumed=True
    )
