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
from roleferry.enrichment.bulk import BulkEnricher

if TYPE_CHECKING:
    from roleferry.runtime import Runtime

QUEUE = "enrichment"
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


async def enqueue(job_id: str, user_id: str) -> None:
    queue = await DBOS.retrieve_queue_async(QUEUE)
    if queue is None:
        raise RuntimeError(f"the {QUEUE} queue is not registered")
    with SetWorkflowID(job_id), SetEnqueueOptions(queue_partition_key=user_id):
        await queue.enqueue_async(enrichment_workflow, job_id)


@DBOS.step()
async def start_step(job_id: str) -> bool:
    runtime = _current()
    return await service.mark_running(runtime.db, job_id, runtime.clock())


@DBOS.step()
async def chunk_step(job_id: str) -> dict[str, Any]:
    runtime = _current()
    providers = runtime.providers
    assert providers is not None
    enricher = BulkEnricher(
        runtime.db,
        runtime.settings.waterfall,
        providers.email_finders,
        runtime.settings.search_cache_ttl_s,
        runtime.clock,
        runtime.settings.enrichment_backoff_s,
    )
    result = await enricher.run(job_id)
    return {"remaining": result.remaining, "wait_s": result.wait_s, "cancelled": result.cancelled}


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
async def enrichment_workflow(job_id: str) -> str:
    if not await start_step(job_id):
        return "cancelled"
    while True:
        progress = await chunk_step(job_id)
        if progress["cancelled"] or progress["remaining"] == 0:
            break
        if progress["wait_s"] > 0:
            await DBOS.sleep_async(min(progress["wait_s"], 3600.0))
    summary = await finish_step(job_id)
    if summary.get("callback_url"):
        await callback_step(job_id, summary)
    return str(summary["status"])
