"""Leased rate-limit tokens (service/token_leases.py): exact for small limits, few store calls for hot keys, never
more than the limit across workers, stale batches dropped, refusals remembered. Counted on the real `limits` strategy,
in memory and on the test redis-server."""

from __future__ import annotations

import threading
import time

import pytest
import redis
from limits import parse
from limits.storage import MemoryStorage, storage_from_string
from limits.strategies import SlidingWindowCounterRateLimiter

from service import token_leases
from service.errors import RateLimited
from service.ratelimit import Budget
from service.token_leases import LEASE_SECONDS, MAX_BATCH, TokenLeases


class CountingStore:
    """The real sliding-window strategy, with a count of how often the shared store was asked."""

    def __init__(self, strategy=None):
        self.strategy = strategy or SlidingWindowCounterRateLimiter(MemoryStorage())
        self.takes: list[int] = []

    def take(self, item, identity: str, cost: int) -> bool:
        self.takes.append(cost)
        return self.strategy.hit(item, "test", identity, cost=cost)

    def wait_hint(self, item, identity: str) -> int:
        return 7


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def leases(store: CountingStore, clock=None) -> TokenLeases:
    return TokenLeases(store.take, store.wait_hint, clock=clock or Clock())


@pytest.mark.parametrize("limit", ["30/minute", "120/minute", "10 per 5 minutes", "199/hour"])
def test_small_limits_are_spent_one_exact_hit_per_request(limit):
    store = CountingStore()
    admitted = leases(store)
    item = parse(limit)
    answers = [admitted.admit(item, "alice") for _ in range(item.amount + 5)]
    assert answers[: item.amount] == [None] * item.amount
    assert answers[item.amount :] == [7] * 5  # refused, with the store's Retry-After hint
    assert store.takes == [1] * (item.amount + 1)  # one take per admitted request, one for the first refusal


def test_a_hot_key_under_a_large_limit_asks_the_store_rarely():
    store = CountingStore()
    admitted = leases(store)
    item = parse("1000000/minute")
    assert all(admitted.admit(item, "backend") is None for _ in range(5000))
    assert len(store.takes) < 40  # batches doubled up to MAX_BATCH: 1, 2, 4, ... 256, 256, ...
    assert max(store.takes) == MAX_BATCH
    assert sum(store.takes) - 5000 < MAX_BATCH  # what is left unspent is less than one batch


def test_batches_never_exceed_one_percent_of_the_limit():
    store = CountingStore()
    admitted = leases(store)
    item = parse("1000/minute")
    for _ in range(200):
        admitted.admit(item, "backend")
    assert max(store.takes) == 10


def test_workers_sharing_one_redis_never_admit_more_than_the_limit(redis_url, redis_client):
    """Four processes' worth of leases on one counter, hammering one key from many threads: the total admitted is
    exactly what the limit allows, never more, and refusals carry a wait."""
    strategy = SlidingWindowCounterRateLimiter(storage_from_string(redis_url))
    workers = [leases(CountingStore(strategy), clock=time.monotonic) for _ in range(4)]
    item = parse("400/minute")  # batches of up to 4
    results: list[int | None] = []
    lock = threading.Lock()

    def hammer(worker: TokenLeases) -> None:
        for _ in range(150):
            answer = worker.admit(item, "one-key")
            with lock:
                results.append(answer)

    threads = [threading.Thread(target=hammer, args=(workers[i % 4],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    admitted = results.count(None)
    assert admitted <= 400
    assert admitted >= 400 - 4 * 3  # at most (batch - 1) tokens per worker are left unspent
    assert all(answer is None or answer >= 1 for answer in results)


class SlowStore(CountingStore):
    """Each store call takes a while, as a Redis round trip does for a thread queued behind a hundred others."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds = seconds
        self.in_flight = 0
        self.most_in_flight = 0
        self._lock = threading.Lock()

    def take(self, item, identity: str, cost: int) -> bool:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(self.seconds)
        with self._lock:
            self.in_flight -= 1
        return super().take(item, identity, cost)


def _admit_together(admitted: TokenLeases, item, count: int) -> list[int | None]:
    start = threading.Barrier(count)
    results: list[int | None] = []

    def one() -> None:
        start.wait()
        results.append(admitted.admit(item, "burst-key"))

    threads = [threading.Thread(target=one) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def test_a_burst_on_a_hot_key_waits_for_one_refill_instead_of_each_asking_the_store():
    """100 requests at once on a key under a large limit: one refill at a time, sized to the requests waiting."""
    store = SlowStore(0.05)
    results = _admit_together(leases(store, clock=time.monotonic), parse("1000000/minute"), 100)
    assert results == [None] * 100
    assert store.most_in_flight == 1
    assert len(store.takes) <= 3  # the first request's batch, then one for everyone who waited (at most 256)
    assert sum(store.takes) - 100 < MAX_BATCH


def test_a_refill_wakes_only_the_waiters_its_batch_can_serve(monkeypatch):
    """The first batch of a burst holds one token: it wakes one waiter (to ask for the next batch), not all 99 to find
    it gone. Every needless wake-up is one more turn in the GIL queue where the request that has to reach Ayrshare
    also waits (BENCHMARKS.md, scenario 2)."""
    admitted = leases(SlowStore(0.05), clock=time.monotonic)
    wakeups: list[bool] = []

    class CountingCondition(threading.Condition):
        def wait(self, timeout=None):
            woken = super().wait(timeout)
            if self._lock is admitted._lock:  # the leases' own waits, not the test's barrier
                wakeups.append(woken)
            return woken

    monkeypatch.setattr(token_leases.threading, "Condition", CountingCondition)
    results = _admit_together(admitted, parse("1000000/minute"), 100)

    assert results == [None] * 100
    # 99 waiters: one wake-up for the next batch's asker, then one for each of the other 98 it brings a token for.
    # Waking everyone at the end of each refill made it 99 + 98.
    assert len(wakeups) <= 100, len(wakeups)
    assert all(wakeups)  # woken by a refill, not by the timeout


def test_small_limits_are_still_asked_concurrently_one_exact_hit_each():
    """Coalescing is for leased batches only: under a limit of 30 a burst is not made to queue for the store."""
    store = SlowStore(0.05)
    results = _admit_together(leases(store, clock=time.monotonic), parse("30/minute"), 20)
    assert results == [None] * 20
    assert store.takes == [1] * 20
    assert store.most_in_flight > 1


def test_a_batch_not_spent_within_the_lease_is_dropped_and_the_next_batch_is_smaller():
    store = CountingStore()
    clock = Clock()
    admitted = leases(store, clock)
    item = parse("100000/minute")
    for _ in range(15):  # batches 1, 2, 4, 8: 15 tokens, all spent
        admitted.admit(item, "k")
    assert store.takes == [1, 2, 4, 8]
    admitted.admit(item, "k")  # a batch of 16, one spent
    clock.now += LEASE_SECONDS + 0.01
    admitted.admit(item, "k")  # the 15 left are stale: not used, and the next batch is halved
    assert store.takes == [1, 2, 4, 8, 16, 8]


def test_a_refusal_is_remembered_without_asking_the_store_again():
    store = CountingStore()
    clock = Clock()
    admitted = leases(store, clock)
    item = parse("2/minute")
    assert [admitted.admit(item, "k") for _ in range(3)] == [None, None, 7]
    takes = len(store.takes)
    assert admitted.admit(item, "k") == 7
    assert len(store.takes) == takes  # answered from memory
    clock.now += 30.01  # one token frees up every window / limit = 30 s: the store is asked again
    admitted.admit(item, "k")
    assert len(store.takes) == takes + 1


def test_local_state_is_bounded_and_forgetting_it_grants_nothing(monkeypatch):
    monkeypatch.setattr(token_leases, "MAX_KEYS", 10)
    store = CountingStore()
    admitted = leases(store)
    item = parse("3/minute")
    for round_ in range(3):
        for key in range(25):
            assert admitted.admit(item, f"user{key}") is None, (round_, key)
    assert len(admitted._leases) <= 10
    assert all(admitted.admit(item, f"user{key}") == 7 for key in range(25))  # the shared count still holds


def test_budget_spends_large_limits_in_batches_on_redis(redis_url, redis_client):
    """Through the service's Budget on the real redis-server: 2,000 requests of one hot key cost a few dozen Redis
    script calls, not 2,000."""
    counter = SlidingWindowCounterRateLimiter(storage_from_string(redis_url))
    budget = Budget(counter, "1000000/minute", "addr", "Too many requests.", "rate_limited")
    redis_client.config_resetstat()
    for _ in range(2000):
        budget("10.0.0.7")
    scripts = redis.Redis.from_url(redis_url).info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    assert 0 < scripts < 40


def test_budget_refuses_past_the_limit_with_retry_after_from_redis(redis_url, redis_client):
    counter = SlidingWindowCounterRateLimiter(storage_from_string(redis_url))
    budget = Budget(counter, "3/minute", "user", "Too many requests for this user.", "rate_limited")
    for _ in range(3):
        budget("alice")
    with pytest.raises(RateLimited) as refused:
        budget("alice")
    assert 1 <= refused.value.retry_after <= 61
    budget("bob")  # another key is untouched
