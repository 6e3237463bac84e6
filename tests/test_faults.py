"""Fault injection against real processes: Redis killed, paused, failed over; lock holders and workers killed;
several instances; shutdown with requests in flight. Every test counts requests sent, failed, and upstream calls."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service import create_app
from service.auth import signed_path
from service.crypto import FernetCodec, derived_cache_key
from tests.conftest import API_KEY, SIGNING_SECRET
from tests.support.processes import RedisServer, ServiceProcess, free_port, wait_until
from tests.support.tcp_proxy import TcpProxy

JSON = {"Accept": "application/json"}


def get(url: str, timeout: float = 15) -> requests.Response:
    return requests.get(url, allow_redirects=False, timeout=timeout)


def link(service: ServiceProcess, user: str) -> str:
    return service.url + signed_path(user, SIGNING_SECRET)


def worker_pids(service: ServiceProcess) -> list[int]:
    return child_pids(service.proc.pid)


def call_in_flight(start_service, emulator, redis_client, latency_ms: int, **settings: str):
    """One worker; a request for alice under way to an upstream answering in `latency_ms`, its lock taken.
    Returns (service, alice's URL, the request's future, the lock's TTL in seconds)."""
    emulator.set_knobs(latency_ms=latency_ms)
    service = start_service(workers=1, **settings)
    url = link(service, "alice")
    in_flight = ThreadPoolExecutor(1).submit(lambda: get(url, timeout=20))
    wait_until(lambda: redis_client.keys("connect:link:v1:*:lock"), 5, what="the lock")
    (lock_key,) = redis_client.keys("connect:link:v1:*:lock")
    return service, url, in_flight, redis_client.pttl(lock_key) / 1000


def child_pids(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


class Load:
    """Requests from several threads until stopped; records every outcome."""

    def __init__(self, urls: list[str], threads: int = 6):
        self.urls, self.threads = urls, threads
        self.statuses: list[int | str] = []
        self._stop = threading.Event()
        self._workers: list[threading.Thread] = []

    def __enter__(self) -> Load:
        for n in range(self.threads):
            thread = threading.Thread(target=self._run, args=(n,), daemon=True)
            thread.start()
            self._workers.append(thread)
        return self

    def _run(self, n: int) -> None:
        i = n
        while not self._stop.is_set():
            try:
                self.statuses.append(get(self.urls[i % len(self.urls)], timeout=10).status_code)
            except requests.RequestException as error:
                self.statuses.append(type(error).__name__)
            i += self.threads

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._workers:
            thread.join(15)

    @property
    def failed(self) -> list:
        return [status for status in self.statuses if status != 302]


# -- Redis faults ---------------------------------------------------------------------------------------------------
def test_redis_killed_under_load_fails_no_request_and_caching_resumes(start_service, emulator):
    redis_server = RedisServer().start()
    try:
        service = start_service(workers=2, REDIS_URL=redis_server.url)
        urls = [link(service, f"user{i}") for i in range(8)]
        with Load(urls) as load:
            time.sleep(1.0)
            redis_server.kill()
            time.sleep(0.5)
            # Users nobody has a link for yet: answered by calling Ayrshare directly while Redis is gone.
            calls = emulator.calls()
            assert [get(link(service, f"user{i}")).status_code for i in range(10, 14)] == [302] * 4
            assert emulator.calls() >= calls + 4
            time.sleep(1.5)
            redis_server.start()
            time.sleep(2.0)
        assert len(load.statuses) > 50
        assert load.failed == []
        # Caching resumed by itself: a new user's link is stored in Redis and served from it afterwards.
        calls = emulator.calls()
        fresh = [link(service, "user20") for _ in range(6)]
        assert [get(url).status_code for url in fresh] == [302] * 6
        assert emulator.calls() == calls + 1
        assert len(redis_server.client().keys("connect:link:v1:*")) >= 1
    finally:
        redis_server.stop()


def test_paused_redis_degrades_to_uncached_instead_of_hanging(start_service, emulator):
    redis_server = RedisServer().start()
    try:
        service = start_service(workers=2, REDIS_URL=redis_server.url, REDIS_TIMEOUT="0.2")
        url = link(service, "alice")
        assert get(url).status_code == 302
        redis_server.pause()  # accepts connections, answers nothing: the worst kind of slow
        responses = [get(url, timeout=3) for _ in range(10)]  # a hang would raise ReadTimeout here
        assert [r.status_code for r in responses] == [302] * 10
        assert requests.get(service.url + "/readyz", timeout=3).status_code == 503
    finally:
        redis_server.resume()
        redis_server.stop()


def test_redis_sentinel_url_follows_the_master(start_service, emulator, tmp_path):
    master = RedisServer().start()
    sentinel_port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\ndir {tmp_path}\nsentinel monitor themaster 127.0.0.1 {master.port} 1\n"
    )
    sentinel = subprocess.Popen(
        [master.binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import redis

        wait_until(lambda: redis.Redis(port=sentinel_port).ping(), 10, what="sentinel")
        service = start_service(workers=2, REDIS_URL=f"redis+sentinel://127.0.0.1:{sentinel_port}/themaster/0")
        url = link(service, "alice")
        assert [get(url).status_code for _ in range(3)] == [302] * 3
        assert emulator.calls() == 1
        assert master.client().keys("connect:link:v1:*")
        assert requests.get(service.url + "/readyz", timeout=5).json()["checks"]["cache"] == "ok"
    finally:
        sentinel.terminate()
        sentinel.wait(5)
        master.stop()


def _refuse_writes(server: RedisServer, how: str) -> None:
    """Redis keeps answering reads but refuses every write: out of memory, or demoted to a replica (of a master that
    is not there, so it keeps its data)."""
    client = server.client()
    if how == "oom":
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", "1")  # OutOfMemoryError on every write from now on
    else:
        client.replicaof("127.0.0.1", free_port())  # ReadOnlyError on every write


@pytest.mark.parametrize("how", ["oom", "readonly"])
def test_redis_refusing_writes_still_serves_cached_links(settings_env, emulator, how):
    # A refused write answers at once: unlike a timeout it is no reason to stop reading the links Redis still holds.
    redis_server = RedisServer().start()
    try:
        client = create_app({**settings_env, "REDIS_URL": redis_server.url}).test_client()
        path = signed_path("alice", SIGNING_SECRET)
        assert client.get(path, headers=JSON).json["cached"] is False
        _refuse_writes(redis_server, how)
        calls = emulator.calls()
        bob = client.get(signed_path("bob", SIGNING_SECRET), headers=JSON)  # a miss: its lock is refused
        assert bob.status_code == 200 and bob.json["cached"] is False
        alice = [client.get(path, headers=JSON) for _ in range(3)]
        assert [(r.status_code, r.json["cached"]) for r in alice] == [(200, True)] * 3
        assert emulator.calls() == calls + 1  # bob's call only: alice's link came from Redis each time
    finally:
        redis_server.stop()


def test_caching_resumes_after_a_failover_behind_the_same_address(settings_env, emulator):
    # A DNS name or a cloud endpoint moved to the new master; the old one, demoted, still holds our open connection.
    old, new = RedisServer().start(), RedisServer().start()
    proxy = TcpProxy("127.0.0.1", old.port)
    try:
        client = create_app({**settings_env, "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0"}).test_client()
        assert client.get(signed_path("alice", SIGNING_SECRET), headers=JSON).json["cached"] is False
        old.client().replicaof("127.0.0.1", new.port)
        proxy.target = ("127.0.0.1", new.port)  # new connections reach the new master
        calls = emulator.calls()
        bob = [client.get(signed_path("bob", SIGNING_SECRET), headers=JSON) for _ in range(3)]
        assert [(r.status_code, r.json["cached"]) for r in bob] == [(200, False), (200, True), (200, True)]
        assert emulator.calls() == calls + 1 and new.client().keys("connect:link:v1:*")
        assert new.client().keys("LIMITS:*")  # the upstream budgets are counted there too, not in process memory
    finally:
        proxy.close()
        old.stop()
        new.stop()


# -- single-flight under crashes and scale-out ----------------------------------------------------------------------
def test_lock_left_by_a_dead_holder_delays_others_at_most_its_ttl(start_service, emulator, redis_client):
    # One worker, slow upstream: kill -9 the worker (the lock's holder) mid-call.
    service, url, in_flight, lock_ttl = call_in_flight(
        start_service, emulator, redis_client, 3000, AYRSHARE_DEADLINE_SECONDS="4", AYRSHARE_READ_TIMEOUT="3.5"
    )
    (worker,) = worker_pids(service)
    for pid in [*child_pids(worker), worker]:
        os.kill(pid, signal.SIGKILL)
    assert isinstance(_outcome(in_flight), requests.RequestException)  # the killed worker's request is lost

    emulator.set_knobs(latency_ms=0)
    wait_until(lambda: len(worker_pids(service)) == 1, 10, what="a replacement worker")
    started = time.monotonic()
    response = get(url, timeout=30)
    waited = time.monotonic() - started
    assert response.status_code == 302
    assert waited <= lock_ttl + 1.5  # the lock's TTL (deadline + 2 s), then one fast upstream call
    assert emulator.calls() == 2


def _outcome(future):
    try:
        return future.result(timeout=20)
    except Exception as error:  # noqa: BLE001 - the outcome is what we assert on
        return error


def test_three_instances_sharing_one_redis_make_one_upstream_call_for_a_burst(start_service, emulator):
    emulator.set_knobs(latency_ms=500)
    services = [start_service(workers=2) for _ in range(3)]
    urls = [link(services[i % 3], "alice") for i in range(100)]
    with ThreadPoolExecutor(max_workers=100) as pool:
        responses = list(pool.map(get, urls))
    assert [r.status_code for r in responses] == [302] * 100
    assert len({r.headers["Location"] for r in responses}) == 1
    assert emulator.calls() == 1


# -- stale-if-error -------------------------------------------------------------------------------------------------
def test_stale_link_is_served_when_ayrshare_fails_but_never_an_expired_one(settings_env, emulator):
    from service import create_app

    emulator.set_knobs(token_lifetime_seconds=4)
    client = create_app(
        {**settings_env, "LINK_MIN_REMAINING_SECONDS": "3", "LINK_STALE_MIN_SECONDS": "1"}
    ).test_client()
    json_accept = {"Accept": "application/json"}
    first = client.get(signed_path("alice", SIGNING_SECRET), headers=json_accept).json
    time.sleep(1.2)  # now under the freshness margin, still above the stale minimum
    emulator.set_knobs(fault="503", fault_count=-1)
    stale = client.get(signed_path("alice", SIGNING_SECRET), headers=json_accept)
    assert stale.status_code == 200 and stale.json["url"] == first["url"] and stale.json["cached"] is True

    time.sleep(2.0)  # less than the stale minimum left: an error, never the nearly dead link
    late = client.get(signed_path("alice", SIGNING_SECRET), headers=json_accept)
    assert late.status_code == 503


# -- shutdown and restarts ------------------------------------------------------------------------------------------
def test_sigterm_lets_in_flight_requests_finish_and_leaves_nothing_half_written(start_service, emulator, redis_client):
    emulator.set_knobs(latency_ms=1500)
    service = start_service(workers=2)
    with ThreadPoolExecutor(max_workers=10) as pool:
        futures = [pool.submit(get, link(service, f"user{i}"), 20) for i in range(10)]
        time.sleep(0.6)
        started = time.monotonic()
        service.proc.send_signal(signal.SIGTERM)
        outcomes = [_outcome(f) for f in futures]
    exit_code = service.proc.wait(40)
    assert [getattr(o, "status_code", o) for o in outcomes] == [302] * 10
    assert exit_code == 0 and time.monotonic() - started < 30  # within the graceful timeout
    assert redis_client.keys("connect:link:v1:*:lock") == []
    codec = FernetCodec(derived_cache_key(API_KEY))  # every cached value is a Fernet token
    for key in redis_client.keys("connect:link:v1:*"):
        record = json.loads(codec.decode(redis_client.get(key)))
        assert set(record) == {"k", "u", "e"} and record["k"] == key.decode() and record["e"] > time.time()


def test_a_killed_worker_is_replaced_and_other_requests_are_unaffected(start_service, emulator):
    service = start_service(workers=2)
    url = link(service, "alice")
    assert get(url).status_code == 302
    wait_until(lambda: len(worker_pids(service)) == 2, 10, what="both workers")
    victim, survivor = worker_pids(service)
    with Load([url], threads=4) as load:
        time.sleep(0.3)
        os.kill(victim, signal.SIGKILL)
        wait_until(
            lambda: len(worker_pids(service)) == 2 and victim not in worker_pids(service),
            10,
            what="a replacement worker",
        )
        time.sleep(0.5)
    # Only requests that were on the killed worker at that instant may fail (at most one per load thread).
    assert len(load.failed) <= 4 and len(load.statuses) > 20
    assert survivor in worker_pids(service)
    assert [get(url).status_code for _ in range(20)] == [302] * 20
