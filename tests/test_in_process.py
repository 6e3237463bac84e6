"""The fast layer: the app on its in-process store (no REDIS_URL), Flask's test client and the real emulator, and
`ConnectService` called as a plain object without Flask."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service import create_app
from service.auth import PresentedCredentials, signed_path
from service.errors import Forbidden, Unauthenticated
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET

JSON = {"Accept": "application/json"}


@pytest.fixture
def memory_env(settings_env) -> dict[str, str]:
    return {k: v for k, v in settings_env.items() if k != "REDIS_URL"}


@pytest.fixture
def memory_app(memory_env):
    app = create_app(memory_env)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def memory_client(memory_app):
    return memory_app.test_client()


def test_the_in_process_store_is_the_cache_without_redis(memory_app, memory_client, emulator):
    first = memory_client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    second = memory_client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert first.json["cached"] is False and second.json["cached"] is True
    assert first.json["url"] == second.json["url"] and emulator.calls() == 1
    ready = memory_client.get("/readyz").json
    assert ready["cache_backend"] == "memory" and ready["status"] == "ready"


def test_a_burst_in_one_process_makes_one_upstream_call(memory_app, emulator):
    emulator.set_knobs(latency_ms=300)
    path = signed_path("bob", SIGNING_SECRET)

    def fetch(_):
        return memory_app.test_client().get(path, headers=JSON).json

    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(fetch, range(20)))
    assert len({answer["url"] for answer in answers}) == 1
    assert emulator.calls() == 1
    assert sum(not answer["cached"] for answer in answers) == 1  # one request called; the others shared its answer


def test_a_failure_is_shared_by_the_burst_and_never_cached(memory_app, emulator):
    emulator.set_knobs(latency_ms=200, fault="500", fault_count=-1)
    path = signed_path("carol@example.com", SIGNING_SECRET)
    with ThreadPoolExecutor(max_workers=10) as pool:
        statuses = list(pool.map(lambda _: memory_app.test_client().get(path, headers=JSON).status_code, range(10)))
    assert statuses == [503] * 10
    assert emulator.calls() == 2  # one call and its one retry, for the whole burst
    emulator.set_knobs(fault=None, fault_count=0, latency_ms=0)
    assert memory_app.test_client().get(path).status_code == 302


def test_stale_if_error_serves_a_link_under_the_margin_but_not_yet_expired(memory_env, emulator):
    # Links live 5 minutes; with a margin of 299 s a link needs renewing after a second, and 15 s are enough to serve.
    client = create_app({**memory_env, "LINK_MIN_REMAINING_SECONDS": "299"}).test_client()
    path = signed_path("user1", SIGNING_SECRET)
    first = client.get(path, headers=JSON).json
    time.sleep(1.1)
    emulator.set_knobs(fault="503", fault_count=-1)
    stale = client.get(path, headers=JSON).json
    assert stale["url"] == first["url"] and stale["cached"] is True


def test_the_use_case_runs_without_flask(memory_app, emulator):
    """`ConnectService.link_for` takes plain values: what was presented, and the query."""
    service = memory_app.extensions["connect"]
    internal = PresentedCredentials(authorization=f"Bearer {INTERNAL_TOKEN}")
    caller, link = service.link_for("alice", internal, {})
    assert caller.kind == "internal" and link.source == "upstream" and link.remaining() > 60
    signed = dict(part.split("=") for part in signed_path("bob", SIGNING_SECRET).partition("?")[2].split("&"))
    with pytest.raises(Forbidden):
        service.link_for("alice", PresentedCredentials(query=signed), {})  # bob's signature does not open alice
    with pytest.raises(Unauthenticated):
        service.link_for("alice", PresentedCredentials(), {})
    assert emulator.calls() == 1
