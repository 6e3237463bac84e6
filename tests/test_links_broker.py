"""LinkBroker on the real Redis: error markers, request deadline, stale-if-error, without Flask or gunicorn."""

from __future__ import annotations

import threading
import time

import pytest

from service.broker import LinkBroker
from service.errors import RateLimited, UpstreamRefused, UpstreamTimeout
from service.link_store import RedisLinkStore
from service.links import Link


@pytest.fixture
def store(redis_url, redis_client) -> RedisLinkStore:
    return RedisLinkStore.from_url(redis_url, timeout=0.5)


def broker(store, **overrides) -> LinkBroker:
    return LinkBroker(**{"store": store, "min_remaining": 60, "stale_min": 15, "lock_ttl": 3, **overrides})


def fresh_link(seconds: float = 300) -> Link:
    return Link(url="https://profile.ayrshare.com/?jwt=x", expires_at=time.time() + seconds)


def test_an_earlier_holders_failure_is_not_reported_for_a_new_attempt(store):
    calls = []

    def failing(deadline):
        calls.append(1)
        raise UpstreamRefused("Ayrshare rejected the API key: check AYRSHARE_API_KEY.", code="bad_api_key")

    with pytest.raises(UpstreamRefused):
        broker(store).get_link("k", failing)
    # Within the marker's second, a new holder tries again and its success is what the caller gets.
    link = broker(store).get_link("k", lambda deadline: fresh_link())
    assert link.source == "upstream" and len(calls) == 1


def test_waiters_of_a_new_attempt_wait_for_it_past_an_earlier_holders_failure(store):
    def refused(deadline):
        raise UpstreamRefused("Ayrshare rejected the API key: check AYRSHARE_API_KEY.", code="bad_api_key")

    with pytest.raises(UpstreamRefused):
        broker(store).get_link("k", refused)
    # The failed holder's marker lives on for its second while another process holds the lock for a new attempt.
    token, _ = store.claim("k", ttl_seconds=30)
    assert token is not None

    def second_holder_succeeds():
        time.sleep(0.3)
        store.write("k", "https://profile.ayrshare.com/?jwt=new", time.time() + 300, ttl_seconds=200)
        store.unlock("k", token)

    thread = threading.Thread(target=second_holder_succeeds)
    thread.start()
    link = broker(store).get_link("k", lambda deadline: pytest.fail("a waiter must not call upstream"))
    thread.join()
    assert link.source == "shared" and link.url.endswith("new")


def test_one_round_trip_claims_the_lock_and_reads_a_link_another_process_just_wrote(store):
    store.write("k", "https://profile.ayrshare.com/?jwt=done", time.time() + 300, ttl_seconds=200)
    token, record = store.claim("k", ttl_seconds=30)
    assert token is not None and record[0].endswith("done")
    assert store.claim("k", ttl_seconds=30) == (None, record)  # held: nobody else gets it
    assert store.peek("k").lock_holder == token
    store.unlock("k", token)
    assert store.peek("k").lock_holder is None


def test_waiters_in_other_processes_get_the_holders_exact_error(store):
    holder_started = threading.Event()

    def slow_failure(deadline):
        holder_started.set()
        time.sleep(0.3)
        raise UpstreamRefused("Ayrshare rejected the API key: check AYRSHARE_API_KEY.", code="bad_api_key")

    results = {}

    def holder():
        try:
            broker(store).get_link("k", slow_failure)
        except UpstreamRefused as error:
            results["holder"] = error

    thread = threading.Thread(target=holder)
    thread.start()
    holder_started.wait(5)
    other_process = broker(store)  # a separate broker: no in-process sharing, only Redis
    with pytest.raises(Exception) as caught:
        other_process.get_link("k", lambda deadline: pytest.fail("the waiter must not call upstream"))
    thread.join()
    assert caught.value.status == 502 and caught.value.code == "bad_api_key"
    assert "AYRSHARE_API_KEY" in caught.value.message


def test_a_whole_request_is_bounded_by_its_deadline_even_behind_a_stuck_holder(store):
    store.claim("k", ttl_seconds=30)  # a holder that hangs on to the lock far longer than our budget
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        broker(store, request_seconds=1.0, lock_ttl=30).get_link("k", lambda deadline: fresh_link())
    assert time.monotonic() - started < 2.0


def test_a_stuck_holder_is_answered_with_a_stale_link_when_one_is_left(store):
    store.write("k", "https://profile.ayrshare.com/?jwt=old", time.time() + 40, ttl_seconds=30)
    store.claim("k", ttl_seconds=30)
    link = broker(store, request_seconds=0.5, lock_ttl=30).get_link("k", lambda deadline: fresh_link())
    assert link.source == "stale" and link.url.endswith("old")


def test_the_fetch_gets_the_requests_remaining_deadline(store):
    seen = []
    broker(store, request_seconds=7).get_link(
        "k", lambda deadline: seen.append(deadline - time.monotonic()) or fresh_link()
    )
    assert 6 < seen[0] <= 7


def test_a_worker_serves_its_copy_without_the_store_and_obeys_the_same_freshness(store, redis_client):
    links = broker(store, min_remaining=60)
    links.get_link("k", lambda deadline: fresh_link(120))
    redis_client.flushdb()  # the store forgets; this worker's copy is exactly as valid as the token's exp
    assert links.get_link("k", lambda deadline: pytest.fail("no upstream call for a valid copy")).source == "cache"

    nearly_expired = broker(store, min_remaining=60)
    nearly_expired.get_link("j", lambda deadline: fresh_link(61))
    time.sleep(1.1)  # now under the margin: neither the copy nor the store may serve it
    assert nearly_expired.get_link("j", lambda deadline: fresh_link(300)).source == "upstream"


def test_links_fetched_while_the_store_is_down_are_not_kept(redis_url):
    from tests.support.processes import RedisServer

    server = RedisServer().start()
    links = broker(RedisLinkStore.from_url(server.url, timeout=0.2))
    server.kill()
    calls = []
    for _ in range(2):
        links.get_link("k", lambda deadline: calls.append(1) or fresh_link())
        links.store._down_until = 0  # skip the retry interval: every request tries the store again
    assert len(calls) == 2  # documented: while Redis is down, requests are answered by calling Ayrshare
    server.stop()


def test_new_redis_connections_go_straight_to_work(store, settings_env):
    """Bursts grow the pools by a connection per request in flight. Without CLIENT SETINFO a new connection saves two
    round trips and a read of redis-py's package metadata before the request's own command (BENCHMARKS.md, scenario 3).
    Both pools (links, rate limits) make their connections that way."""
    from service import ratelimit
    from service.settings import load_settings

    counter = ratelimit.build_counter(load_settings(settings_env))
    for pool in (store.client.connection_pool, counter.storage.storage.connection_pool):
        connection = pool.make_connection()
        assert connection.driver_info is None  # redis-py: no CLIENT SETINFO, no version lookup
        connection.connect()
        assert connection.send_command("PING") is None and connection.read_response() in (b"PONG", "PONG")
        connection.disconnect()


class CountingUnlocks(RedisLinkStore):
    unlocks = 0

    def unlock(self, key: str, token: str) -> None:
        self.unlocks += 1
        super().unlock(key, token)


def test_the_holder_stores_its_link_and_frees_the_lock_in_one_round_trip(redis_url, redis_client):
    store = CountingUnlocks.from_url(redis_url, timeout=0.5)
    links = broker(store)

    links.get_link("k", lambda deadline: fresh_link())

    assert redis_client.get("k") is not None and not redis_client.exists("k:lock")
    assert store.unlocks == 0  # freed by the write's own round trip, not by a second one


def test_a_failed_fetch_still_frees_the_lock_after_writing_its_marker(redis_url, redis_client):
    store = CountingUnlocks.from_url(redis_url, timeout=0.5)

    def refused(deadline):
        raise UpstreamRefused()

    with pytest.raises(UpstreamRefused):
        broker(store).get_link("k", refused)

    assert redis_client.exists("k:error") and not redis_client.exists("k:lock")
    assert store.unlocks == 1


def test_freeing_the_lock_with_the_write_works_after_redis_lost_its_scripts(store, redis_client):
    token, _ = store.claim("k", 5)
    redis_client.script_flush()  # a restarted Redis, or SCRIPT FLUSH: NOSCRIPT for the hash we send

    store.write("k", "https://profile.ayrshare.com/?jwt=x", time.time() + 300, 60, release=token)

    assert redis_client.get("k") is not None and not redis_client.exists("k:lock")


def test_the_write_frees_only_the_lock_its_token_holds(store, redis_client):
    store.claim("k", 5)  # another holder's lock

    store.write("k", "https://profile.ayrshare.com/?jwt=x", time.time() + 300, 60, release="not-that-holder")

    assert redis_client.exists("k:lock")


def test_a_release_that_fails_leaves_the_link_stored_and_the_store_in_use(store, redis_client):
    token, _ = store.claim("k", 5)
    redis_client.delete("k:lock")
    redis_client.hset("k:lock", "not", "a string")  # the release script's GET now fails (WRONGTYPE)

    freed = store.write("k", "https://profile.ayrshare.com/?jwt=x", time.time() + 300, 60, release=token)

    assert freed is False  # so the holder tries once more itself, or the lock's TTL frees it
    assert store.read("k") is not None  # stored, and the store was not switched off for the failed release


@pytest.fixture
def cluster_url():
    """A one-node Redis Cluster holding every slot: enough to run the cluster client's own code paths."""
    from tests.support.processes import RedisServer, free_port, wait_until

    # The cluster bus port defaults to port + 10,000, past 65,535 for many free ports: it gets a free port of its own.
    cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()))
    server = RedisServer(extra_args=cluster).start()
    node = server.client()
    node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_until(lambda: "cluster_state:ok" in str(node.execute_command("CLUSTER", "INFO")), 10, what="the cluster")
    yield f"redis+cluster://127.0.0.1:{server.port}"
    server.stop()


def test_on_redis_cluster_a_holder_stores_its_link_and_frees_its_lock(cluster_url):
    """A cluster pipeline refuses EVALSHA: there the link and the lock's release go in two round trips."""
    store = RedisLinkStore.from_url(cluster_url, timeout=1.0)
    calls = []

    first = broker(store).get_link("k", lambda deadline: calls.append(1) or fresh_link())
    second = broker(store).get_link("k", lambda deadline: calls.append(1) or fresh_link())  # another process

    assert first.source == "upstream" and second.source == "cache" and calls == [1]
    assert store.peek("k").lock_holder is None


def test_a_leader_over_its_own_limit_is_refused_alone_and_an_admitted_waiter_leads_instead(store):
    """The leader's request limit is spent inside the flight (by the fetcher, under gunicorn); its refusal must not
    become its waiters' answer, and must not reach Ayrshare."""
    links = broker(store)
    leader_in_flight, waiter_admitted = threading.Event(), threading.Event()
    calls, outcomes = [], {}

    def fetch(deadline):
        calls.append(1)
        return fresh_link()

    def leader_admit():
        leader_in_flight.set()
        waiter_admitted.wait(5)  # refuse only once the waiter has joined the flight
        raise RateLimited(retry_after=7)

    def leader():
        try:
            links.get_link("k", fetch, admit=leader_admit)
        except RateLimited as error:
            outcomes["leader"] = error

    thread = threading.Thread(target=leader)
    thread.start()
    assert leader_in_flight.wait(5)
    waiter_link = links.get_link("k", fetch, admit=waiter_admitted.set)
    thread.join(5)

    assert outcomes["leader"].retry_after == 7
    assert waiter_link.source == "upstream" and len(calls) == 1
