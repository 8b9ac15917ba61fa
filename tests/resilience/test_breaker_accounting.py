"""The breaker counts only real calls: our own refusals and cancelled calls are neither
successes nor failures, a probe's slot comes back on every exit path, and a state machine over
acquire/record/release/clock sequences holds resilience4j's state table."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pytest
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from roleferry.monitoring.integrations import IntegrationStats
from roleferry.providers import errors
from roleferry.providers.apollo.client import ApolloClient
from roleferry.providers.apollo.spec import SPEC as APOLLO
from roleferry.providers.http import ProviderHTTP
from roleferry.resilience.breaker import BreakerConfig, CircuitBreaker, CircuitState, Permit
from roleferry.resilience.deadline import Deadline
from roleferry.resilience.policy import Policy, PolicyConfig
from roleferry.resilience.ratelimit import Priority, Window
from roleferry.resilience.store import MemoryStore, RedisStore, StateStore
from roleferry.resilience.testing import set_testing
from tests.conftest import REDIS_URL
from tests.support.sandbox_server import SandboxServer

T = TypeVar("T")


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Apollo:
    client: ApolloClient
    policy: Policy
    clock: Clock


@pytest.fixture
async def apollo(sb: SandboxServer) -> AsyncIterator[Apollo]:
    """The real Apollo client on the sandbox, under a policy whose clock the test moves: a
    budget of 2 calls in 10 minutes, and a breaker that opens after 2 real calls."""
    set_testing(True, attempts=2)
    clock = Clock()
    policy = Policy(
        "apollo",
        PolicyConfig(
            windows=[Window(2, 600)],
            breaker=BreakerConfig(minimum_calls=2, window=4, open_s=30, half_open_calls=2),
        ),
        MemoryStore(clock=clock),
        IntegrationStats(),
        clock=clock,
    )
    http = ProviderHTTP(APOLLO, sb.base("apollo"), APOLLO.sandbox_key)
    yield Apollo(ApolloClient(http, policy), policy, clock)
    await http.aclose()


async def search(apollo: Apollo) -> None:
    await apollo.client.search_people(
        "domaur.com", ["vp"], 3, deadline=Deadline(3), priority=Priority.INTERACTIVE
    )


def sent(sb: SandboxServer) -> int:
    return sum(sum(s.values()) for s in sb.stats()["providers"]["apollo"].values())


async def test_budget_refusals_never_close_an_open_breaker(
    apollo: Apollo, sb: SandboxServer
) -> None:
    """Past the open time, two budget refusals leave it half-open (they closed it before) and
    its probe slots free for the next real call."""
    sb.control("apollo", error_rate=1.0, error_status=500)
    with pytest.raises(errors.Unavailable):
        await search(apollo)
    breaker = apollo.policy.breaker
    assert await breaker.state() is CircuitState.OPEN
    apollo.clock.now += 31
    before = sent(sb)
    for _ in range(2):
        with pytest.raises(errors.BudgetExhausted):
            await search(apollo)
    assert sent(sb) == before, "a refusal sends nothing"
    assert await breaker.state() is CircuitState.HALF_OPEN
    probes = [await breaker.acquire() for _ in range(3)]
    assert [p.permitted for p in probes] == [True, True, False], "both slots came back"


async def test_refusals_do_not_dilute_the_failure_rate(apollo: Apollo, sb: SandboxServer) -> None:
    """Closed: 2 failures, 10 refusals, 2 failures is 4 real calls all failed, so it opens."""
    apollo.policy.breaker.config = BreakerConfig(minimum_calls=4, window=20, open_s=30)
    sb.control("apollo", error_rate=1.0, error_status=503)
    with pytest.raises(errors.Unavailable):
        await search(apollo)
    for _ in range(10):
        with pytest.raises(errors.BudgetExhausted):
            await search(apollo)
    assert await apollo.policy.breaker.state() is CircuitState.CLOSED
    apollo.clock.now += 601
    with pytest.raises(errors.Unavailable):
        await search(apollo)
    assert await apollo.policy.breaker.state() is CircuitState.OPEN


async def test_a_cancelled_probe_is_released(apollo: Apollo, sb: SandboxServer) -> None:
    """A half-open probe cancelled while its request hangs gives its slot back."""
    apollo.policy.breaker.config = BreakerConfig(minimum_calls=2, open_s=30, half_open_calls=1)
    sb.control("apollo", error_rate=1.0, error_status=500)
    with pytest.raises(errors.Unavailable):
        await search(apollo)
    apollo.clock.now += 601
    sb.control("apollo", error_rate=0.0, hang=True)
    breaker = apollo.policy.breaker
    probe = asyncio.create_task(search(apollo))
    for _ in range(500):
        state = await breaker.store.get(breaker.key)
        if probe.done() or (state and state["probes"] == 1):
            break
        await asyncio.sleep(0.01)
    assert not probe.done()
    assert (await breaker.acquire()).permitted is False, "the one probe is out"
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    assert await breaker.state() is CircuitState.HALF_OPEN
    assert (await breaker.acquire()).permitted is True


async def test_a_probe_cancelled_while_waiting_for_the_bulkhead_is_released() -> None:
    """The probe waits for a bulkhead slot held by another call and is cancelled there."""
    clock = Clock()
    policy = Policy(
        "x",
        PolicyConfig(
            windows=[Window(100, 1)],
            max_concurrency=1,
            breaker=BreakerConfig(minimum_calls=1, open_s=5, half_open_calls=1),
        ),
        MemoryStore(clock=clock),
        IntegrationStats(),
        clock=clock,
    )
    await policy.breaker.record(await policy.breaker.acquire(), failed=True, duration_s=0.1)
    clock.now += 6
    await policy.bulkhead.acquire()
    probe = asyncio.create_task(policy.call("/x", asyncio.sleep, deadline=Deadline(5)))
    breaker = policy.breaker
    for _ in range(100):
        state = await breaker.store.get(breaker.key)
        if state and state["state"] == CircuitState.HALF_OPEN and state["probes"] == 1:
            break
        await asyncio.sleep(0.01)
    assert not probe.done()
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    policy.bulkhead.release()
    assert (await policy.breaker.acquire()).permitted is True


async def test_memory_store_forgets_state_past_its_ttl() -> None:
    clock = Clock()
    store = MemoryStore(clock=clock)
    await store.update("k", lambda _s: ({"n": 1}, None), ttl_s=10)
    clock.now += 9
    assert await store.get("k") == {"n": 1}
    clock.now += 2
    assert await store.get("k") is None


@pytest.mark.redis
async def test_redis_store_does_not_refresh_the_ttl_of_unchanged_state(redis_url: str) -> None:
    """A refused call leaves state as it was: its TTL keeps running down."""
    from redis.asyncio import Redis

    redis = Redis.from_url(redis_url)
    store = RedisStore(redis, f"rf-ttl-{os.getpid()}:")
    try:
        await store.update("k", lambda _s: ({"n": 1}, None), ttl_s=60)
        await redis.pexpire(store.prefix + "k", 5_000)
        await store.update("k", lambda s: (s or {}, None), ttl_s=60)
        assert await redis.pttl(store.prefix + "k") <= 5_000
        await store.update("k", lambda _s: ({"n": 2}, None), ttl_s=60)
        assert await redis.pttl(store.prefix + "k") > 5_000
    finally:
        await store.clear()
        await redis.aclose()


@pytest.mark.redis
async def test_redis_watch_loop_is_bounded(redis_url: str) -> None:
    """A key another client changes on every try ends in StateContention after max_tries."""
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

    from roleferry.resilience.store import StateContention

    redis = Redis.from_url(redis_url)
    other = SyncRedis.from_url(redis_url)
    store = RedisStore(redis, f"rf-watch-{os.getpid()}:", max_tries=5, backoff_s=0.001)
    tries = 0

    def meddle(_state: dict[str, Any] | None) -> tuple[dict[str, Any], None]:
        nonlocal tries
        tries += 1
        other.set(store.prefix + "k", str(tries))
        return {"n": tries}, None

    try:
        with pytest.raises(StateContention):
            await store.update("k", meddle, ttl_s=60)
        assert tries == 5
    finally:
        await store.clear()
        await redis.aclose()
        other.close()


# The state machine ---------------------------------------------------------------------------

CONFIG = BreakerConfig(
    window=4,
    minimum_calls=2,
    failure_rate=0.5,
    slow_call_s=1.0,
    slow_rate=0.8,
    open_s=10,
    half_open_calls=2,
)


def now_value(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine that never suspends (the memory store's) to its result."""
    try:
        coro.send(None)
    except StopIteration as done:
        result: T = done.value
        return result
    raise AssertionError("the memory store suspended")


@dataclass
class Model:
    """resilience4j's table, written plainly: what each state does with each event."""

    state: CircuitState = CircuitState.CLOSED
    window: list[tuple[bool, bool]] = field(default_factory=list)
    open_until: float = 0.0
    probes: int = 0
    results: list[tuple[bool, bool]] = field(default_factory=list)
    generation: int = 0

    @staticmethod
    def tripped(outcomes: list[tuple[bool, bool]]) -> bool:
        n = len(outcomes)
        return (
            sum(f for f, _ in outcomes) / n >= CONFIG.failure_rate
            or sum(s for _, s in outcomes) / n >= CONFIG.slow_rate
        )

    def acquire(self, now: float) -> tuple[bool, CircuitState, int]:
        if self.state is CircuitState.OPEN:
            if now < self.open_until:
                return False, self.state, self.generation
            self.state, self.probes, self.results = CircuitState.HALF_OPEN, 0, []
            self.generation += 1
        if self.state is CircuitState.HALF_OPEN:
            if self.probes >= CONFIG.half_open_calls:
                return False, self.state, self.generation
            self.probes += 1
        return True, self.state, self.generation

    def record(self, state: CircuitState, generation: int, outcome: tuple[bool, bool], now: float):
        if self.state is CircuitState.HALF_OPEN:
            if state is CircuitState.HALF_OPEN and generation == self.generation:
                self.results.append(outcome)
                if len(self.results) >= CONFIG.half_open_calls:
                    if self.tripped(self.results):
                        self.state, self.open_until = CircuitState.OPEN, now + CONFIG.open_s
                    else:
                        self.state, self.window, self.probes, self.results = (
                            CircuitState.CLOSED,
                            [],
                            0,
                            [],
                        )
        elif self.state is CircuitState.CLOSED and state is CircuitState.CLOSED:
            self.window = [*self.window, outcome][-CONFIG.window :]
            if len(self.window) >= CONFIG.minimum_calls and self.tripped(self.window):
                self.state, self.open_until = CircuitState.OPEN, now + CONFIG.open_s
                self.window, self.probes, self.results = [], 0, []

    def release(self, state: CircuitState, generation: int) -> None:
        if (
            self.state is CircuitState.HALF_OPEN
            and state is CircuitState.HALF_OPEN
            and generation == self.generation
            and self.probes > 0
        ):
            self.probes -= 1


class BreakerMachine(RuleBasedStateMachine):
    """Random sequences of acquire, record (ok, failed, slow), release (a refusal or a
    cancellation) and clock moves: the breaker agrees with the table at every step."""

    view_s: float | None = None

    def __init__(self) -> None:
        super().__init__()
        self.clock = Clock()
        self.breaker = CircuitBreaker(
            "sm", self.store(), CONFIG, clock=self.clock, view_s=self.view_s
        )
        self.model = Model()
        self.out: list[tuple[Permit, int]] = []

    def store(self) -> StateStore:
        return MemoryStore(clock=self.clock)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return now_value(coro)

    @rule()
    def acquire(self) -> None:
        permit = self.run(self.breaker.acquire())
        permitted, state, generation = self.model.acquire(self.clock.now)
        assert permit.permitted == permitted
        assert permit.state is state
        if permit.permitted:
            self.out.append((permit, generation))

    @precondition(lambda self: self.out)
    @rule(data=st.data(), failed=st.booleans(), slow=st.booleans())
    def record(self, data: st.DataObject, failed: bool, slow: bool) -> None:
        permit, generation = self.out.pop(data.draw(st.integers(0, len(self.out) - 1)))
        duration = 1.5 if slow else 0.1
        self.run(self.breaker.record(permit, failed=failed, duration_s=duration))
        self.model.record(permit.state, generation, (failed, slow), self.clock.now)

    @precondition(lambda self: self.out)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        before = self.model.state
        permit, generation = self.out.pop(data.draw(st.integers(0, len(self.out) - 1)))
        self.run(self.breaker.release(permit))
        self.model.release(permit.state, generation)
        assert self.model.state is before, "a release never changes the state"

    @rule(seconds=st.sampled_from([0.5, 3.0, 9.9, 10.0, 25.0]))
    def tick(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def agrees_with_the_table(self) -> None:
        stored = self.run(self.breaker.store.get(self.breaker.key))
        if stored is None:
            assert self.model.state is CircuitState.CLOSED
            assert not self.model.window
            return
        assert CircuitState(stored["state"]) is self.model.state
        if self.model.state is CircuitState.HALF_OPEN:
            assert stored["probes"] == self.model.probes <= CONFIG.half_open_calls
        if self.model.state is CircuitState.CLOSED:
            assert [tuple(map(bool, o)) for o in stored["window"]] == self.model.window


TestBreakerStateTable = BreakerMachine.TestCase
TestBreakerStateTable.settings = hsettings(max_examples=150, stateful_step_count=40, deadline=None)


class RedisBreakerMachine(BreakerMachine):
    """The same table with the state in Redis (WATCH/MULTI), as several processes share it."""

    def store(self) -> StateStore:
        from redis.asyncio import Redis

        self.loop = asyncio.new_event_loop()
        self.redis = Redis.from_url(os.environ.get("ROLEFERRY_TEST_REDIS_URL", REDIS_URL))
        self.redis_store = RedisStore(self.redis, f"rf-sm-{os.getpid()}-{id(self)}:")
        return self.redis_store

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def teardown(self) -> None:
        self.run(self.redis_store.clear())
        self.run(self.redis.aclose())
        self.loop.close()


@pytest.mark.redis
def test_breaker_state_table_on_redis(redis_url: str) -> None:
    """resilience4j's table holds with the breaker's state in Redis."""
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        RedisBreakerMachine,
        settings=hsettings(max_examples=25, stateful_step_count=30, deadline=None),
    )


class RedisViewBreakerMachine(RedisBreakerMachine):
    """The same table through the local view a policy keeps of shared state (one process:
    its view is what it wrote), so calls that read only the view follow the table too."""

    view_s = 60.0


@pytest.mark.redis
def test_breaker_state_table_through_the_local_view(redis_url: str) -> None:
    """resilience4j's table holds when acquire and record go by the view."""
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(
        RedisViewBreakerMachine,
        settings=hsettings(max_examples=25, stateful_step_count=30, deadline=None),
    )
