"""Single-flight and Redis outages against the real service under gunicorn (several workers, real Redis)."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import requests

from service.auth import signed_path
from tests.conftest import SIGNING_SECRET
from tests.support.processes import RedisServer

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW


def burst(url: str, count: int, headers: dict | None = None) -> list[requests.Response]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(
            pool.map(lambda _: requests.get(url, headers=headers, allow_redirects=False, timeout=30), range(count))
        )


def test_concurrent_cold_requests_across_workers_cause_one_upstream_call(start_service, emulator):
    emulator.set_knobs(latency_ms=400)  # long enough that every request arrives while the first is in flight
    service = start_service(workers=3)
    responses = burst(service.url + signed_path("alice", SIGNING_SECRET), 40)

    assert [r.status_code for r in responses] == [302] * 40
    assert len({r.headers["Location"] for r in responses}) == 1
    assert emulator.calls() == 1


def test_redis_killed_then_back_service_keeps_redirecting_and_caching_resumes(start_service, emulator):
    redis_server = RedisServer().start()
    try:
        service = start_service(workers=2, REDIS_URL=redis_server.url)
        assert (
            requests.get(
                service.url + signed_path("alice", SIGNING_SECRET), allow_redirects=False, timeout=10
            ).status_code
            == 302
        )
        assert requests.get(service.url + "/readyz", timeout=5).status_code == 200

        redis_server.kill()
        during = [
            requests.get(service.url + signed_path(f"user{i}", SIGNING_SECRET), allow_redirects=False, timeout=10)
            for i in range(6)
        ]
        assert [r.status_code for r in during] == [302] * 6
        ready = requests.get(service.url + "/readyz", timeout=5)
        assert ready.status_code == 503 and ready.json()["checks"]["cache"] == "failing"
        assert emulator.calls() == 1 + 6  # no cache for new users: each answered by calling Ayrshare directly

        redis_server.start()  # same port, empty
        time.sleep(1.5)  # past the store's retry interval
        url = service.url + signed_path("bob", SIGNING_SECRET)
        first, second, third = (requests.get(url, allow_redirects=False, timeout=10) for _ in range(3))
        assert first.status_code == second.status_code == third.status_code == 302
        assert first.headers["Location"] == second.headers["Location"] == third.headers["Location"]
        assert emulator.calls() == 1 + 6 + 1  # caching resumed: one call for bob, shared by every worker
        assert redis_server.client().keys("connect:link:v1:*")
        assert requests.get(service.url + "/readyz", timeout=5).status_code == 200
    finally:
        redis_server.stop()
