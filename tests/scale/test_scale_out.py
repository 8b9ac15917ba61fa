"""Scale-out on PostgreSQL + Redis with 2 API (`serve`) and 2 `worker` processes: one budget
and one breaker for all, a killed process's job taken over within the bound, webhooks exactly
once while an API process is killed and restarted."""

from __future__ import annotations

import random
import re
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, NamedTuple

import httpx
import psycopg
import pytest
from redis import Redis
from sqlalchemy.engine import make_url

from roleferry.sandbox.world import World
from roleferry.users import service
from tests.conftest import POSTGRES_URL, REDIS_URL, _reachable, _service_missing, free_port
from tests.enrichment.test_jobs_api import TERMINAL, contacts, people
from tests.scale.cluster import Cluster, Proc, base_env, sql
from tests.support.webhooks import in_db, sendgrid_event
from tests.webhooks.test_exactly_once import (
    UNIQUE,
    assert_applied_exactly_once,
    make_batches,
    poison_suppressions,
    seed_messages,
    send_all,
    wait_all_applied,
)

pytestmark = [pytest.mark.postgres, pytest.mark.redis]
WORLD = World(7)
BOUND_S = 5.0 + 0.5  # ROLEFERRY_EXECUTOR_DEAD_AFTER_S + one heartbeat interval
APOLLO_LIMIT = "40/20"
OTHERS_LIMIT = "1000/1"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    if not _reachable(POSTGRES_URL, 5432):
        _service_missing("PostgreSQL")
    if not _reachable(REDIS_URL, 6379):
        _service_missing("Redis")
    tmp = tmp_path_factory.mktemp("cluster")
    name = f"rf_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(POSTGRES_URL).set(drivername="postgresql")
    conninfo = admin.render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    database_url = admin.set(database=name).render_as_string(hide_password=False)
    redis_url = make_url(REDIS_URL).set(database="11").render_as_string(hide_password=False)
    redis = Redis.from_url(redis_url)
    for key in redis.scan_iter("roleferry:*"):
        redis.delete(key)
    sandbox_port = free_port()
    env = base_env(tmp, database_url, redis_url, f"http://127.0.0.1:{sandbox_port}")
    env.update(
        ROLEFERRY_APOLLO_RATE_LIMIT=APOLLO_LIMIT,
        # Apollo's budget is the one under test; Clay's and Hunter's (one contact a call)
        # would only pace the jobs' tails, a handful of contacts per chunk.
        ROLEFERRY_CLAY_RATE_LIMIT=OTHERS_LIMIT,
        ROLEFERRY_HUNTER_RATE_LIMIT=OTHERS_LIMIT,
        ROLEFERRY_ENRICHMENT_BACKOFF_S="1",
        ROLEFERRY_BREAKER_OPEN_S="10",
        ROLEFERRY_WEBHOOK_RETRY_BACKOFF_S="0.1",
        ROLEFERRY_WEBHOOK_MAX_ATTEMPTS="3",
    )
    sandbox = Proc(
        "sandbox",
        [
            "sandbox",
            *("--fault", f"apollo:rate_limit={APOLLO_LIMIT};latency_ms=60"),
            *("--fault", f"clay:rate_limit={OTHERS_LIMIT}"),
            *("--fault", f"hunter:rate_limit={OTHERS_LIMIT}"),
        ],
        env,
        tmp,
        sandbox_port,
    ).start()
    cluster = Cluster(database_url, sandbox)
    try:
        for proc_name in ("api-a", "api-b", "worker-a", "worker-b"):
            data = tmp / proc_name
            data.mkdir()
            is_api = proc_name.startswith("api")
            cluster.procs[proc_name] = Proc(
                proc_name,
                ["serve"] if is_api else ["worker"],
                {**env, "ROLEFERRY_DATA_DIR": str(data)},
                data,
                free_port() if is_api else None,
            ).start()
        for proc in [sandbox, *cluster.procs.values()]:  # started side by side
            proc.wait_up(database_url)
        yield cluster
    finally:
        cluster.stop()
        redis.close()
        with psycopg.connect(conninfo, autocommit=True) as conn:
            for db in (name, f"{name}_dbos"):
                conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def user_key(cluster: Cluster) -> str:
    async def create(session: Any) -> str:
        made = await service.create_user(session, f"u{uuid.uuid4().hex[:8]}@example.com")
        return made.key.raw

    return in_db(cluster.database_url, create)


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_one_budget_and_one_breaker_across_every_process(cluster: Cluster) -> None:
    """Searches on both API processes and a bulk job on the workers, all wanting Apollo more
    than its limit allows: Apollo never answers 429; then a breaker opened through one API
    process is open in the other's view."""
    key = user_key(cluster)
    apis = [cluster.api("api-a"), cluster.api("api-b")]
    job = httpx.post(
        f"{apis[0].url}/api/v1/enrichment-jobs",
        json={"contacts": contacts(people(200, 200))},
        headers=auth(key),
        timeout=30,
    )
    assert job.status_code == 202, job.text
    domains = [c.domain for c in WORLD.companies[300:360]]

    def search(i: int) -> None:
        for domain in domains[i::4]:
            httpx.post(
                f"{apis[i % 2].url}/api/v1/contacts/search",
                json={"domain": domain, "titles": ["a"], "limit": 3},
                headers=auth(key),
                timeout=30,
            )

    threads = [threading.Thread(target=search, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    calls = cluster.stats("apollo")
    assert sum(sum(s.values()) for s in calls.values()) >= 20, calls
    assert all(s.get("429", 0) == 0 for s in calls.values()), calls

    cluster.control("clay", error_rate=1.0, error_status=503)
    try:
        target = next(
            c
            for c in WORLD.companies[400:]
            if not WORLD.apollo_knows_company(c) and WORLD.clay_knows_company(c)
        )

        def circuits(api: Proc) -> dict[str, str]:
            answer = httpx.get(f"{api.url}/api/v1/integrations", headers=auth(key), timeout=30)
            return {p["provider"]: p["circuit"] for p in answer.json()}

        attempts: list[Any] = []
        for title in "abcdefghijklmnopqrst":
            if circuits(apis[0])["clay"] == "open":
                break
            answer = httpx.post(
                f"{apis[0].url}/api/v1/contacts/search",
                json={"domain": target.domain, "titles": [title], "limit": 3, "deadline_s": 2},
                headers=auth(key),
                timeout=30,
            ).json()
            # An answer, or a 503 (every provider failed or spent) with its attempts.
            attempts = answer.get("attempts") or answer["error"]["details"]["attempts"]
        assert circuits(apis[0])["clay"] == "open", attempts
        assert circuits(apis[1])["clay"] == "open", "the other API process sees it open"
    finally:
        cluster.control("clay", error_rate=0.0)


class Workflow(NamedTuple):
    id: str
    name: str
    status: str
    executor: str
    dispatches: int
    """DBOS's `recovery_attempts`: how many times a queue has started it."""


class RunningJob:
    """A job of 450 people submitted through one API process and followed to its end: its
    status through the API, and its DBOS workflows (the job's own, then the `resume_later`
    ones it sleeps in after a long wait and the resumed ones it goes on in), whichever
    processes run them."""

    def __init__(self, cluster: Cluster, first_person: int) -> None:
        self.cluster = cluster
        self.key = user_key(cluster)
        self.api = cluster.api("api-a")
        response = httpx.post(
            f"{self.api.url}/api/v1/enrichment-jobs",
            json={"contacts": contacts(people(first_person, 450))},
            headers=auth(self.key),
            timeout=30,
        )
        self.id = response.json()["id"]
        url = make_url(cluster.database_url)
        self.system_url = url.set(database=f"{url.database}_dbos").render_as_string(
            hide_password=False
        )

    def workflows(self, *ids: str) -> list[Workflow]:
        """The job's workflows not finished (queued or running); or those of `ids`, finished
        or not."""
        rows = sql(
            self.system_url,
            "SELECT workflow_uuid, name, status, executor_id, recovery_attempts "
            "FROM dbos.workflow_status WHERE starts_with(workflow_uuid, %s) AND "
            "(workflow_uuid = ANY(%s) OR %s AND status IN ('ENQUEUED', 'PENDING'))",
            self.id,
            list(ids),
            not ids,
        )
        return [Workflow(*row) for row in rows]

    def state(self) -> dict[str, Any]:
        body: dict[str, Any] = httpx.get(
            f"{self.api.url}/api/v1/enrichment-jobs/{self.id}", headers=auth(self.key), timeout=30
        ).json()
        return body

    def runner_mid_job(self) -> tuple[Proc, list[Workflow]]:
        """Waits until some contacts are saved, others not yet, and one process runs every
        unfinished workflow of the job, the one doing its chunks among them: (that process,
        those workflows). From then on the job is followed through another API process."""
        deadline = time.monotonic() + 90
        while True:
            state = self.state()
            assert state["status"] not in TERMINAL, f"the job ended too soon: {state}"
            running = self.workflows()
            if (
                0 < state["done"] < 450
                and {(w.status, w.executor) for w in running} == {("PENDING", running[0].executor)}
                and any(w.name == "enrichment_workflow" for w in running)
            ):
                break
            assert time.monotonic() < deadline, (running, state)
            time.sleep(0.1)
        runner = self.cluster.pid_of(running[0].executor)
        self.api = next(
            p for n, p in self.cluster.procs.items() if p is not runner and n.startswith("api")
        )
        return runner, running

    def runner_frozen_mid_job(self) -> tuple[Proc, str, list[Workflow]]:
        """The process running the job, stopped (SIGSTOP) with a chunk of it in hand:
        (process, its executor, the job's workflows it holds). Frozen, it can neither finish
        them nor hand them on until the test kills or continues it."""
        while True:
            runner, running = self.runner_mid_job()
            runner.freeze()
            executor = running[0].executor
            held = [w for w in self.workflows() if w.executor == executor]
            if any(w.name == "enrichment_workflow" and w.status == "PENDING" for w in held):
                return runner, executor, held
            runner.thaw()

    def wait_taken_from(self, executor: str, since: float) -> float:
        """Seconds from `since` until none of the job's unfinished workflows is left with
        `executor`: each handed back to its queue and started again by a live process."""
        while any(w.executor == executor for w in self.workflows()):
            assert time.monotonic() - since < BOUND_S + 15, ("not taken over", self.workflows())
            time.sleep(0.1)
        return time.monotonic() - since

    def assert_completed_once(self, since: float) -> None:
        while (state := self.state())["status"] not in TERMINAL:
            assert time.monotonic() - since < 120, (state, self.workflows())
            time.sleep(0.2)
        assert state["done"] == 450
        assert self.workflows() == [], "nothing of the job is left queued or running"
        rows = httpx.get(
            f"{self.api.url}/api/v1/enrichment-jobs/{self.id}/results", headers=auth(self.key)
        ).json()["results"]
        assert sorted(r["line"] for r in rows) == list(range(1, 451)), "every contact once"
        notes = [
            n
            for n in httpx.get(
                f"{self.api.url}/api/v1/notifications", headers=auth(self.key)
            ).json()
            if n["data"]["id"] == self.id
        ]
        assert len(notes) == 1, "the job finished once"


def took_over(cluster: Cluster, executor: str) -> list[tuple[str, int]]:
    """Which processes logged taking `executor` over, and how many workflows each took."""
    line = re.compile(rf"dead_executor={re.escape(executor)} workflows=(\d+)")
    return [
        (p.name, int(m.group(1)))
        for p in cluster.procs.values()
        for m in line.finditer(p.log.read_text())
    ]


def test_a_killed_process_job_completes_on_another_within_the_bound(cluster: Cluster) -> None:
    """SIGKILL the process running a job: a survivor takes the job's workflows it held over
    once its heartbeat is older than the bound, and the job ends with every contact once. A
    process restarted meanwhile does not take (recover) the running workflows of a live one."""
    job = RunningJob(cluster, 500)
    runner, running = job.runner_mid_job()
    bystander = next(
        p for n, p in cluster.procs.items() if p is not runner and n.startswith("worker")
    )
    bystander.kill()
    bystander.start().wait_up(cluster.database_url)
    now = job.workflows(*(w.id for w in running))
    assert {(w.id, w.executor, w.dispatches) for w in now} == {
        (w.id, w.executor, w.dispatches) for w in running
    }, "a restarted process left them alone"

    runner, executor, held = job.runner_frozen_mid_job()
    runner.kill()
    killed_at = time.monotonic()
    taken_over_s = job.wait_taken_from(executor, killed_at)
    runner.start()
    job.assert_completed_once(killed_at)
    runner.wait_up(cluster.database_url)
    assert taken_over_s < BOUND_S + 10, taken_over_s
    assert all(w.executor != executor for w in job.workflows(*(w.id for w in held))), held
    ((_, taken),) = took_over(cluster, executor)
    assert taken >= len(held), "one survivor took the workflows it held over"


def test_a_process_stopped_with_sigterm_hands_its_job_back(cluster: Cluster) -> None:
    """SIGTERM the process running a chunk of a job: it stops, dates its heartbeat back, and
    one survivor takes over the workflows it left and completes the job, every contact once."""
    job = RunningJob(cluster, 1000)
    runner, executor, held = job.runner_frozen_mid_job()
    runner.stop()
    stopped_at = time.monotonic()
    job.wait_taken_from(executor, stopped_at)
    runner.start()
    job.assert_completed_once(stopped_at)
    runner.wait_up(cluster.database_url)
    moved = [w for w in job.workflows(*(w.id for w in held)) if w.executor != executor]
    assert moved, ("the stopped process handed back what it held", held)
    ((_, taken),) = took_over(cluster, executor)
    assert taken >= len(moved), "one survivor took the handed-back workflows over"


def test_webhooks_to_both_api_processes_while_one_is_killed_and_restarted(
    cluster: Cluster,
) -> None:
    """10,000 events (30% duplicates, shuffled) to either API process at random; one is
    SIGKILLed a third of the way and restarted: none lost, none applied twice, and a poisoned
    event (the database refuses its effect) parked as failed without holding the rest."""
    batches, expected = make_batches(seed=17)
    poisoned = sendgrid_event("bounce", "poison@example.com")
    batches[len(batches) // 2].append(poisoned)
    seed_messages(cluster.database_url)
    in_db(cluster.database_url, poison_suppressions)
    apis = [cluster.api("api-a"), cluster.api("api-b")]
    killed = threading.Event()

    def killer() -> None:
        while sql(cluster.database_url, "SELECT count(*) FROM webhook_events")[0][0] < UNIQUE // 3:
            time.sleep(0.05)
        apis[1].kill()
        killed.set()
        apis[1].start().wait_up(cluster.database_url)

    chaos = threading.Thread(target=killer)
    chaos.start()
    retries = send_all(lambda: random.choice(apis).url, batches)
    chaos.join()
    assert killed.is_set()
    assert retries > 0, "senders saw the killed process and retried"
    wait_all_applied(cluster.database_url, timeout=120, parked=1)
    assert_applied_exactly_once(cluster.database_url, expected, parked=1)
    assert sql(
        cluster.database_url,
        "SELECT status, attempts FROM webhook_events WHERE event_id = %s",
        poisoned["sg_event_id"],
    ) == [("failed", 3)]
