"""Rate limits on /connect: per client address, per user, per user for upstream calls; 429 + Retry-After in the
service's error shape; X-Forwarded-For only behind configured proxies; the limiter fails open when its Redis dies."""

from __future__ import annotations

import time

import pytest
import requests

from service import create_app
from service.auth import signed_path
from service.links.broker import ERROR_MARKER_SECONDS
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.processes import RedisServer

JSON = {"Accept": "application/json"}
INTERNAL = {**JSON, "Authorization": f"Bearer {INTERNAL_TOKEN}"}


@pytest.fixture
def limited_env(settings_env):
    """The shared test env without its generous limits, so the service's real defaults apply unless overridden."""
    env = {k: v for k, v in settings_env.items() if not k.startswith("RATE_LIMIT_")}
    return env


def test_defaults_are_the_documented_ones(limited_env):
    settings = create_app(limited_env).config["SETTINGS"]
    assert settings.rate_limit_per_address == "120/minute"
    assert settings.rate_limit_per_user == "30/minute"
    assert settings.rate_limit_upstream_per_user == "10 per 5 minutes"
    assert settings.rate_limit_upstream_global == "300 per 5 minutes"


def test_per_address_limit_answers_429_with_retry_after_in_our_shape(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_PER_ADDRESS": "3/minute"}).test_client()
    statuses = [client.get("/connect/nobody-signed", headers=JSON).status_code for _ in range(3)]
    assert statuses == [401, 401, 401]  # refused requests count against the address
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 429
    assert response.json["error"] == {"code": "rate_limited", "message": response.json["detail"]}
    assert response.json["status"] == 429 and response.json["code"] == "rate_limited"
    assert 1 <= int(response.headers["Retry-After"]) <= 61  # the window is a minute, rounded up
    assert response.headers["Cache-Control"] == "no-store"
    assert emulator.calls() == 0
    html = client.get("/connect/alice", headers={"Accept": "text/html"})
    assert html.status_code == 429 and "text/html" in html.content_type and "Retry-After" in html.headers


def test_per_user_limit_counts_only_answers_that_passed_authentication(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_PER_USER": "2/minute"}).test_client()
    # Strangers cannot use up alice's allowance: refusals are not counted against the user they name.
    for _ in range(5):
        assert client.get("/connect/alice", headers=JSON).status_code == 401
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 200
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 200  # a cache hit still counts
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 429
    assert client.get("/connect/bob", headers=INTERNAL).status_code == 200  # per user, not global
    assert emulator.calls() == 2


def test_upstream_limit_counts_only_calls_to_ayrshare(limited_env, emulator):
    env = {
        **limited_env,
        "RATE_LIMIT_UPSTREAM_PER_USER": "2 per 5 minutes",
        "REDIRECT_ALLOWED_HOSTS": "app.example.com",
    }
    client = create_app(env).test_client()

    def connect(path):
        return client.get(
            "/connect/alice", query_string={"redirect": f"https://app.example.com/{path}"}, headers=INTERNAL
        )

    assert connect("a").status_code == 200  # upstream
    for _ in range(5):
        assert connect("a").status_code == 200  # cache hits are free
    assert connect("b").status_code == 200  # upstream (other options, other cache entry)
    third = connect("c")
    assert third.status_code == 429 and int(third.headers["Retry-After"]) > 0
    assert third.json["error"]["code"] == "upstream_budget_spent"
    assert connect("a").status_code == 200  # a spent upstream budget never blocks a link that is already cached
    assert emulator.calls() == 2


def test_upstream_failures_count_too(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_UPSTREAM_PER_USER": "1 per 5 minutes"}).test_client()
    emulator.set_knobs(fault="500", fault_count=-1)  # (a 429 holds the link off by itself: test_upstream_errors)
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 503
    calls = emulator.calls()  # the HTTP client repeats a 5xx once within the request
    assert calls == 2
    time.sleep(ERROR_MARKER_SECONDS)  # past the failure marker that answers concurrent waiters
    for _ in range(3):
        assert client.get("/connect/alice", headers=INTERNAL).status_code == 429
    assert emulator.calls() == calls  # we never hammer a failing Ayrshare for one user


def test_forwarded_for_is_ignored_without_trusted_proxies(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_PER_ADDRESS": "2/minute"}).test_client()
    for spoofed in ("198.51.100.1", "198.51.100.2"):
        client.get("/connect/x", headers={**JSON, "X-Forwarded-For": spoofed})
    assert client.get("/connect/x", headers={**JSON, "X-Forwarded-For": "198.51.100.3"}).status_code == 429


def test_forwarded_for_names_the_client_behind_one_trusted_proxy(limited_env, emulator):
    env = {**limited_env, "RATE_LIMIT_PER_ADDRESS": "2/minute", "TRUSTED_PROXY_COUNT": "1"}
    client = create_app(env).test_client()
    for _ in range(2):
        assert client.get("/connect/x", headers={**JSON, "X-Forwarded-For": "198.51.100.1"}).status_code == 401
    assert client.get("/connect/x", headers={**JSON, "X-Forwarded-For": "198.51.100.1"}).status_code == 429
    # Another client behind the same proxy has its own allowance; a forged extra hop does not help the first one.
    assert client.get("/connect/x", headers={**JSON, "X-Forwarded-For": "198.51.100.2"}).status_code == 401
    forged = client.get("/connect/x", headers={**JSON, "X-Forwarded-For": "203.0.113.9, 198.51.100.1"})
    assert forged.status_code == 429


def test_preflight_requests_are_not_limited(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_PER_ADDRESS": "1/minute"}).test_client()
    for _ in range(3):
        assert client.options("/connect/alice").status_code == 200


def test_in_memory_limits_without_redis(limited_env, emulator):
    env = {k: v for k, v in limited_env.items() if k != "REDIS_URL"}
    client = create_app({**env, "RATE_LIMIT_PER_USER": "1/minute"}).test_client()
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 200
    assert client.get("/connect/alice", headers=INTERNAL).status_code == 429


def test_the_upstream_limit_is_shared_through_redis_by_every_process(limited_env, emulator):
    env = {**limited_env, "RATE_LIMIT_UPSTREAM_PER_USER": "1 per 5 minutes"}
    first, second = create_app(env).test_client(), create_app(env).test_client()
    assert first.get("/connect/alice", headers=INTERNAL).status_code == 200
    refused = second.get("/connect/alice?allowedSocial=twitter", headers=INTERNAL)  # a miss, in another process
    assert refused.status_code == 429 and refused.json["error"]["code"] == "upstream_budget_spent"
    assert second.get("/connect/alice", headers=INTERNAL).status_code == 200  # the cached link is still served
    assert emulator.calls() == 1


def test_request_limits_are_counted_in_each_process(limited_env, emulator):
    """Flood guards, like nginx's limit_req: no Redis round trip, and each worker process counts its own."""
    env = {**limited_env, "RATE_LIMIT_PER_USER": "1/minute"}
    first, second = create_app(env).test_client(), create_app(env).test_client()
    assert first.get("/connect/alice", headers=INTERNAL).status_code == 200
    assert first.get("/connect/alice", headers=INTERNAL).status_code == 429
    assert second.get("/connect/alice", headers=INTERNAL).status_code == 200


def test_limiter_fails_open_when_its_redis_dies(start_service, limited_env, emulator):
    redis_server = RedisServer().start()
    try:
        service = start_service(workers=1, REDIS_URL=redis_server.url, RATE_LIMIT_PER_USER="3/minute")
        url = service.url + "/connect/alice"
        assert requests.get(url, headers=INTERNAL, timeout=10).status_code == 200
        redis_server.kill()
        statuses = [requests.get(url, headers=INTERNAL, timeout=10).status_code for _ in range(5)]
        # No 500s: the first answers are served, and the limits carry on in memory, so the burst still meets a 429.
        assert 500 not in statuses and statuses[0] == 200
        assert 429 in statuses
        assert "Traceback" not in service.log()
    finally:
        redis_server.stop()


def test_the_local_counter_weighs_the_previous_window_as_limits_does():
    """`limits`' sliding-window counter: the previous window's count, weighted by the share of it still covered."""
    from limits import parse

    from service.web.ratelimit import LocalCounter

    now = [1000.0]  # a window boundary for a 10-second window
    counter = LocalCounter(clock=lambda: now[0])
    limit = parse("4 per 10 seconds")
    assert [counter.hit(limit, "a")[0] for _ in range(5)] == [True, True, True, True, False]
    assert counter.hit(limit, "b")[0]  # per key
    now[0] = 1002.5  # the same window: still refused, with a hint of when it ends
    allowed, wait = counter.hit(limit, "a")
    assert not allowed and wait == 7.5
    now[0] = 1012.5  # next window, a quarter in: the 4 earlier count as 3
    assert [counter.hit(limit, "a")[0] for _ in range(2)] == [True, False]
    now[0] = 1030.0  # two windows later: nothing earlier counts
    assert all(counter.hit(limit, "a")[0] for _ in range(4))


def test_the_account_wide_upstream_budget_refuses_new_links_but_never_a_cache_hit(limited_env, emulator):
    from prometheus_client import REGISTRY

    refused_before = REGISTRY.get_sample_value("ayrshare_connect_rate_limited_total", {"limit": "upstream-global"})
    client = create_app({**limited_env, "RATE_LIMIT_UPSTREAM_GLOBAL": "3 per 5 minutes"}).test_client()
    for user in ("alice", "bob", "user1"):  # three different users: each under their own per-user limit
        assert client.get(f"/connect/{user}", headers=INTERNAL).status_code == 200
    refused = client.get("/connect/user2", headers=INTERNAL)
    assert refused.status_code == 503 and refused.json["error"]["code"] == "upstream_budget_global"
    assert int(refused.headers["Retry-After"]) > 0
    assert client.get("/connect/alice", headers=INTERNAL).json["cached"] is True  # a hit is never refused
    assert emulator.calls() == 3
    refused_after = REGISTRY.get_sample_value("ayrshare_connect_rate_limited_total", {"limit": "upstream-global"})
    assert refused_after == (refused_before or 0) + 1


def test_the_account_wide_budget_is_shared_across_processes(limited_env, emulator):
    env = {**limited_env, "RATE_LIMIT_UPSTREAM_GLOBAL": "2 per 5 minutes"}
    first, second = create_app(env).test_client(), create_app(env).test_client()
    assert first.get("/connect/alice", headers=INTERNAL).status_code == 200
    assert second.get("/connect/bob", headers=INTERNAL).status_code == 200
    assert first.get("/connect/user3", headers=INTERNAL).status_code == 503
    assert emulator.calls() == 2


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("fe80::1%eth0", "fe80::/64"),
        ("not an address", "not an address"),
        (None, "unknown"),
    ],
)
def test_ipv6_clients_are_limited_by_their_64(address, counted_as):
    from service.web.ratelimit import address_key

    assert address_key(address) == counted_as


def test_one_ipv6_host_cannot_dodge_the_address_limit_by_rotating_addresses(limited_env, emulator):
    client = create_app({**limited_env, "RATE_LIMIT_PER_ADDRESS": "3/minute"}).test_client()
    statuses = [
        client.get("/connect/alice", headers=JSON, environ_base={"REMOTE_ADDR": f"2001:db8:7:7::{n}"}).status_code
        for n in range(1, 6)
    ]
    assert statuses == [401, 401, 401, 429, 429]
    other = client.get("/connect/alice", headers=JSON, environ_base={"REMOTE_ADDR": "2001:db8:7:8::1"})
    assert other.status_code == 401  # the next /64 is another client
