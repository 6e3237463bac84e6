"""LinkBroker on the real Redis: error markers, request deadline, stale-if-error, without Flask or gunicorn."""

from __future__ import annotations

import threading
import time

import pytest

from service.errors import UpstreamRefused, UpstreamTimeout
from service.links import LinkBroker
from service.links.broker import ERROR_MARKER_SECONDS
from service.links.store import RedisLinkStore, StoreUnavailable
from service.upstream import Link
from tests.support.tcp_proxy import TcpProxy


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


@pytest.mark.parametrize(
    "holder_seconds", [0.3, ERROR_MARKER_SECONDS + 0.5], ids=["within the marker's second", "after it expired"]
)
def test_waiters_of_a_new_attempt_wait_for_it_past_an_earlier_holders_failure(store, holder_seconds):
    # The failed holder's marker lives on for its second while another process holds the lock for a new attempt;
    # neither the old marker nor its expiring is news of the new attempt.
    def refused(deadline):
        raise UpstreamRefused("Ayrshare rejected the API key: check AYRSHARE_API_KEY.", code="bad_api_key")

    with pytest.raises(UpstreamRefused):
        broker(store).get_link("k", refused)
    second_holder = store.lock("k", ttl_seconds=30)
    assert second_holder.acquire()

    def second_holder_succeeds():
        time.sleep(holder_seconds)
        store.write("k", Link("https://profile.ayrshare.com/?jwt=new", time.time() + 300), ttl_seconds=200)
        second_holder.release()

    thread = threading.Thread(target=second_holder_succeeds)
    thread.start()
    link = broker(store).get_link("k", lambda deadline: pytest.fail("a waiter must not call upstream"))
    thread.join()
    assert link.source == "shared" and link.url.endswith("new")


def test_a_lock_whose_reply_came_too_late_is_still_its_holders(redis_url, redis_client):
    # redis-py repeats a command that timed out. When the first SET NX did land, the repeat finds the key taken by
    # our own token: that is our lock, not a rival's to wait out for its whole TTL.
    port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
    proxy = TcpProxy("127.0.0.1", port)
    try:
        store = RedisLinkStore.from_url(f"redis://127.0.0.1:{proxy.port}/0", timeout=0.25)
        proxy.delay_reply_to(b"k:lock", 0.4)
        started = time.monotonic()
        link = broker(store, lock_ttl=10).get_link("k", lambda deadline: fresh_link())
        assert link.source == "upstream" and time.monotonic() - started < 3
        assert not redis_client.exists("k:lock") and redis_client.exists("k")  # stored, and the lock freed
    finally:
        proxy.close()


def test_the_fetch_lock_is_held_by_one_holder_at_a_time_and_freed_by_it(store, redis_client):
    first, second = store.lock("k", ttl_seconds=30), store.lock("k", ttl_seconds=30)
    assert first.acquire() and not second.acquire()
    second.release()  # not the holder: frees nothing
    assert redis_client.exists("k:lock")
    first.release()
    assert not redis_client.exists("k:lock") and second.acquire()


def test_waiters_in_other_processes_get_the_holders_exact_error(store):
    holder_started = threading.Event()

    def slow_failure(deadline):
        holder_started.set()
        time.sleep(1.0)  # long enough for the waiter to be waiting on a loaded machine
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
    store.lock("k", ttl_seconds=30).acquire()  # a holder that hangs on to the lock far longer than our budget
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        broker(store, request_seconds=1.0, lock_ttl=30).get_link("k", lambda deadline: fresh_link())
    assert time.monotonic() - started < 2.0


def test_a_stuck_holder_is_answered_with_a_stale_link_when_one_is_left(store):
    store.write("k", Link("https://profile.ayrshare.com/?jwt=old", time.time() + 40), ttl_seconds=30)
    store.lock("k", ttl_seconds=30).acquire()
    link = broker(store, request_seconds=0.5, lock_ttl=30).get_link("k", lambda deadline: fresh_link())
    assert link.source == "stale" and link.url.endswith("old")


def test_the_fetch_gets_the_requests_remaining_deadline(store):
    seen = []
    broker(store, request_seconds=7).get_link(
        "k", lambda deadline: seen.append(deadline - time.monotonic()) or fresh_link()
    )
    assert 6 < seen[0] <= 7


def test_a_stored_link_is_served_until_it_is_under_the_margin(store):
    links = broker(store, min_remaining=60)
    links.get_link("k", lambda deadline: fresh_link(120))
    assert links.get_link("k", lambda deadline: pytest.fail("no upstream call for a valid link")).source == "cache"
    assert broker(store).get_link("k", lambda deadline: pytest.fail("nor from another process")).source == "cache"

    links.get_link("j", lambda deadline: fresh_link(61))
    time.sleep(1.1)  # now under the margin: the store may not serve it
    assert links.get_link("j", lambda deadline: fresh_link(300)).source == "upstream"


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


def test_a_holder_stores_its_link_and_frees_its_lock_though_another_request_saw_redis_fail(store, redis_client):
    # One request's Redis timeout starts the worker's retry interval; the holder that called Ayrshare meanwhile must
    # still leave its link and free its lock, or waiters in other workers wait out the lock and call again.
    def fetch_while_another_request_fails(deadline):
        store._down_until = time.monotonic() + 5  # what another thread's timeout does in the meantime
        return fresh_link()

    assert broker(store).get_link("k", fetch_while_another_request_fails).source == "upstream"
    assert redis_client.exists("k") and not redis_client.exists("k:lock")


def test_the_holder_stores_its_link_and_frees_the_lock(store, redis_client):
    broker(store).get_link("k", lambda deadline: fresh_link())
    assert redis_client.get("k") is not None and not redis_client.exists("k:lock")


def test_a_failed_fetch_still_frees_the_lock_after_writing_its_marker(store, redis_client):
    def refused(deadline):
        raise UpstreamRefused()

    with pytest.raises(UpstreamRefused):
        broker(store).get_link("k", refused)

    assert redis_client.exists("k:error") and not redis_client.exists("k:lock")


def test_the_lock_is_freed_after_redis_lost_its_scripts(store, redis_client):
    """redis-py's Lock releases with a Lua script by its hash; a restarted Redis answers NOSCRIPT, and the script is
    loaded again (redis 8.1.0's Script object does this)."""
    lock = store.lock("k", ttl_seconds=5)
    assert lock.acquire()
    redis_client.script_flush()
    lock.release()
    assert not redis_client.exists("k:lock")


def test_a_holder_whose_lock_expired_does_not_free_its_successors_lock(store, redis_client):
    late = store.lock("k", ttl_seconds=0.2)
    assert late.acquire()
    time.sleep(0.3)  # expired: another process takes over
    assert store.lock("k", ttl_seconds=30).acquire()
    late.release()
    assert redis_client.exists("k:lock")
    assert store.read_with_marker("k") == (None, None)  # and the store is still in use


@pytest.fixture
def cluster():
    """A one-node Redis Cluster holding every slot: enough to run the cluster client's own code paths."""
    from tests.support.processes import RedisServer, free_port, wait_until

    # The cluster bus port defaults to port + 10,000, past 65,535 for many free ports: it gets a free port of its own.
    cluster = ("--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-port", str(free_port()))
    server = RedisServer(extra_args=cluster).start()
    node = server.client()
    node.execute_command("CLUSTER", "ADDSLOTSRANGE", 0, 16383)
    wait_until(lambda: "cluster_state:ok" in str(node.execute_command("CLUSTER", "INFO")), 10, what="the cluster")
    yield server
    server.stop()


def test_on_redis_cluster_a_holder_stores_its_link_and_frees_its_lock(cluster):
    store = RedisLinkStore.from_url(f"redis+cluster://127.0.0.1:{cluster.port}", timeout=1.0)
    calls = []

    first = broker(store).get_link("k", lambda deadline: calls.append(1) or fresh_link())
    second = broker(store).get_link("k", lambda deadline: calls.append(1) or fresh_link())  # another process

    assert first.source == "upstream" and second.source == "cache" and calls == [1]
    assert not store.client.exists("k:lock")


def test_a_redis_cluster_outage_is_served_like_a_redis_outage(cluster):
    """With no node reachable the cluster client raises RedisClusterException, which is not a RedisError."""
    store = RedisLinkStore.from_url(f"redis+cluster://127.0.0.1:{cluster.port}", timeout=1.0)
    cluster.kill()

    assert store.ping() is False
    with pytest.raises(StoreUnavailable):
        store.read("k")
    link = broker(store).get_link("k", lambda deadline: fresh_link())
    assert link.source == "direct"  # fetched without the cache, not a 500


def test_an_error_reply_other_than_a_refused_write_makes_the_store_skip_redis():
    """Only out-of-memory and read-only refusals leave Redis in use; any other error reply (CLUSTERDOWN, which costs
    the cluster client sleeps and retries; NOPERM here) is failing Redis, skipped for the retry interval."""
    from tests.support.processes import RedisServer

    server = RedisServer().start()
    try:
        admin = server.client()
        admin.acl_setuser("service", enabled=True, passwords=["+pw"], keys=["*"], commands=["+@all", "-get"])
        store = RedisLinkStore.from_url(f"redis://service:pw@127.0.0.1:{server.port}/0", timeout=1.0)
        store.retry_interval = 60
        with pytest.raises(StoreUnavailable):
            store.read("k")  # NOPERM
        admin.acl_setuser("service", commands=["+get"])
        assert store.client.set("k", b"not a record")  # would be read (and refused as forged) if Redis were asked
        with pytest.raises(StoreUnavailable):
            store.read("k")  # skipped, not asked
    finally:
        server.stop()


@pytest.mark.parametrize(
    "fields",
    [
        {"status": 302, "code": "x", "message": "m", "retry_after": None},  # an error is never a redirect
        {"status": 200, "code": "x", "message": "m", "retry_after": None},
        {"status": 503, "code": "x", "message": "m", "retry_after": "soon"},  # Retry-After must stay a number
        {"status": 503, "code": "x", "message": "m"},
    ],
)
def test_a_marker_that_is_not_an_errors_public_fields_is_refused(fields):
    from service.errors import ServiceError

    with pytest.raises(ValueError):
        ServiceError.from_public_fields(fields)
