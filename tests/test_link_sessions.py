"""Link Sessions, the default flow: keyless URLs, their checks, revoke, status and the Connect Accounts email, end to
end through Flask, the real emulator and the real Redis."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from service import ConfigError, create_app
from service.auth import signed_path
from service.links import MemoryLinkStore, RedisLinkStore, cache_key
from service.links.store import HandedOut, user_scope
from service.upstream import Link, LinkOptions
from tests.conftest import API_KEY, INTERNAL_TOKEN, PROFILES, SIGNING_SECRET

JSON = {"Accept": "application/json"}
INTERNAL = {"Authorization": f"Bearer {INTERNAL_TOKEN}", **JSON}


def signed(user: str) -> str:
    return signed_path(user, SIGNING_SECRET, 300)


def session_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["session"][0]


def link(client, user: str = "alice") -> dict:
    response = client.get(signed(user), headers=JSON)
    assert response.status_code == 200, response.json
    return response.json


def status(client, user: str = "alice"):
    return client.get(f"/internal/v1/users/{user}/link-session", headers=INTERNAL)


def revoke(client, user: str = "alice"):
    return client.delete(f"/internal/v1/users/{user}/links", headers=INTERNAL)


# -- the link ---------------------------------------------------------------------------------------------------------
def test_the_session_url_carries_an_opaque_session_and_no_key(client, emulator):
    body = link(client)
    query = parse_qs(urlsplit(body["url"]).query)
    assert set(query) == {"session", "domain"} and query["session"][0].startswith("ayr_ls_")
    assert API_KEY not in body["url"] and PROFILES["alice"] not in body["url"]
    assert set(body) == {"url", "expiresAt", "cached"} and body["cached"] is False
    request = emulator.stats()["requests"][-1]
    assert request["endpoint"] == "link-sessions" and "privateKey" not in request["options"]


def test_the_service_starts_without_a_private_key_in_the_session_flow(settings_env, emulator):
    env = {key: value for key, value in settings_env.items() if key != "AYRSHARE_PRIVATE_KEY"}
    response = create_app(env).test_client().get(signed("alice"))
    assert response.status_code == 302 and "session=ayr_ls_" in response.headers["Location"]


def test_the_jwt_flow_still_needs_its_private_key(settings_env):
    env = {key: value for key, value in settings_env.items() if key != "AYRSHARE_PRIVATE_KEY"}
    with pytest.raises(ConfigError, match="^AYRSHARE_PRIVATE_KEY"):
        create_app({**env, "AYRSHARE_LINK_FLOW": "jwt"})


def test_expires_at_from_the_answer_is_the_truth_for_the_cache(settings_env, emulator, redis_client):
    emulator.set_knobs(token_lifetime_seconds=200)  # Ayrshare gives less than the 30 minutes asked for
    client = create_app({**settings_env, "AYRSHARE_EXPIRES_IN": "30"}).test_client()
    body = link(client)
    assert emulator.stats()["requests"][-1]["options"]["expiresIn"] == 30
    (key,) = redis_client.keys("connect:link:v1:*")
    assert redis_client.pttl(key) / 1000 <= 200 - 15
    assert link(client)["url"] == body["url"] and emulator.calls() == 1


@pytest.mark.parametrize(
    ("fault", "why"),
    [
        ("foreign_host", "a URL on a host not in LINK_ALLOWED_HOSTS"),
        ("long_expiry", "an expiresAt ten years ahead of the 5 minutes asked for"),
        ("expired", "an expiresAt in the past"),
        ("missing_url", "no url"),
        ("missing_token", "no sessionId"),
    ],
)
def test_an_unusable_session_answer_is_a_502_and_never_cached(client, emulator, redis_client, fault, why):
    emulator.set_knobs(fault=fault)
    response = client.get(signed("alice"), headers=JSON)
    assert response.status_code == 502, why
    assert response.json["error"]["code"] == "upstream_malformed"
    cached = [key for key in redis_client.keys("connect:link:v1:*") if not key.endswith((b":error", b":lock"))]
    assert cached == []


# -- the internal API's door ------------------------------------------------------------------------------------------
INTERNAL_PATHS = [
    ("delete", "/internal/v1/users/alice/links"),
    ("get", "/internal/v1/users/alice/link-session"),
    ("post", "/internal/v1/users/alice/connect-email"),
]


@pytest.mark.parametrize(("method", "path"), INTERNAL_PATHS)
def test_only_the_internal_token_opens_the_internal_api(client, emulator, method, path):
    signed_query = signed("alice").partition("?")[2]
    refused = [
        {},  # nothing
        {"Authorization": "Bearer not-the-token-at-all-000000"},
        {"Authorization": f"Bearer {INTERNAL_TOKEN}x"},
        {"Authorization": f"Basic {INTERNAL_TOKEN}"},
        {"X-Forwarded-User": "alice"},
    ]
    for headers in refused:
        response = getattr(client, method)(path, headers={**headers, **JSON})
        assert response.status_code == 401, headers
        assert response.headers["Cache-Control"] == "no-store"
    response = getattr(client, method)(f"{path}?{signed_query}", headers=JSON)  # a valid signed link
    assert response.status_code == 401
    assert emulator.session_stats() == {"creates": 0, "reads": 0, "revokes": 0}


def test_without_an_internal_token_configured_the_internal_api_is_off(settings_env, emulator):
    env = {key: value for key, value in settings_env.items() if key != "INTERNAL_API_TOKEN"}
    response = create_app(env).test_client().delete("/internal/v1/users/alice/links", headers=INTERNAL)
    assert response.status_code == 403 and response.json["error"]["code"] == "internal_api_disabled"


# -- revoke -----------------------------------------------------------------------------------------------------------
def test_revoke_drops_the_cached_link_tells_ayrshare_and_the_url_is_never_served_again(client, emulator):
    first = link(client)
    assert link(client)["cached"] is True

    response = revoke(client)
    assert response.status_code == 200
    assert response.json == {"user": "alice", "sessionsRevoked": 1, "linksDropped": 1}
    assert emulator.session_stats()["revokes"] == 1
    page = requests.get(first["url"], timeout=5)
    assert page.status_code == 410 and 'data-reason="revoked"' in page.text

    second = link(client)
    assert second["url"] != first["url"] and second["cached"] is False and emulator.calls() == 2
    assert link(client)["url"] == second["url"]


def test_revoke_of_a_user_with_nothing_handed_out_is_a_no_op(client, emulator):
    assert revoke(client).json == {"user": "alice", "sessionsRevoked": 0, "linksDropped": 0}
    assert revoke(client, "nobody-here").status_code == 404


def test_a_failed_revoke_is_reported_never_serves_the_url_and_is_retried(client, emulator):
    first = link(client)
    emulator.set_knobs(fault="503", fault_count=-1)
    failed = revoke(client)
    assert failed.status_code == 503 and failed.json["error"]["code"] == "revoke_incomplete"
    assert "Retry-After" in failed.headers
    emulator.set_knobs(fault=None)
    assert requests.get(first["url"], timeout=5).status_code == 200  # Ayrshare has not revoked it yet...

    second = link(client)  # ...but the service no longer serves it
    assert second["url"] != first["url"]
    retried = revoke(client)
    assert retried.status_code == 200 and retried.json["sessionsRevoked"] == 2
    assert requests.get(first["url"], timeout=5).status_code == 410
    assert requests.get(second["url"], timeout=5).status_code == 410


@pytest.mark.parametrize("store_kind", ["redis", "memory"])
def test_a_link_written_after_its_revoke_is_not_kept(redis_url, redis_client, store_kind):
    # The race the tombstones close: a fetch that finishes while a revoke runs must not cache the revoked URL.
    store = RedisLinkStore.from_url(redis_url, timeout=1) if store_kind == "redis" else MemoryLinkStore()
    scope = user_scope("fingerprint", "ACME", "PK-ALICE-0001")
    key = cache_key(scope, LinkOptions())
    fresh = Link("https://profile.ayrshare.com/?session=ayr_ls_x", time.time() + 300, session_id="s1")
    store.drop(scope, [HandedOut("s1", key, fresh.expires_at, time.time())])  # the revoke got there first

    assert store.write(key, fresh, ttl_seconds=200) is False
    assert store.read(key) is None
    other = Link("https://profile.ayrshare.com/?session=ayr_ls_y", time.time() + 300, session_id="s2")
    assert store.write(key, other, ttl_seconds=200) is True and store.read(key)[0] == other.url
    assert [item.session_id for item in store.handed_out(scope)] == ["s1", "s2"]


def test_revoke_covers_every_option_set_of_the_user(settings_env, emulator):
    client = create_app({**settings_env, "REDIRECT_ALLOWED_HOSTS": "app.example.com"}).test_client()
    plain = link(client)
    narrowed = client.get(signed_path("alice", SIGNING_SECRET, options={"allowedSocial": "twitter"}), headers=JSON).json
    assert plain["url"] != narrowed["url"]
    assert revoke(client).json == {"user": "alice", "sessionsRevoked": 2, "linksDropped": 2}


# -- status -----------------------------------------------------------------------------------------------------------
def test_status_reads_the_current_session_from_ayrshare(client, emulator):
    assert status(client).status_code == 404
    first = link(client)
    pending = status(client)
    assert pending.status_code == 200 and pending.json["state"] == "pending" and pending.json["useCount"] == 0
    assert set(pending.json) >= {"state", "expiresAt", "useCount"}
    requests.get(first["url"], timeout=5)
    requests.get(first["url"], timeout=5)
    used = status(client).json
    assert used["state"] == "active" and used["useCount"] == 2
    assert used["firstUsedAt"] <= used["lastUsedAt"]
    assert first["url"] not in str(used) and "sessionId" not in used

    revoke(client)
    gone = status(client)
    assert gone.status_code == 404 and gone.json["error"]["code"] == "no_link_session"


def test_status_in_the_jwt_flow_says_there_are_no_sessions(settings_env, emulator):
    client = create_app({**settings_env, "AYRSHARE_LINK_FLOW": "jwt"}).test_client()
    link(client)
    response = status(client)
    assert response.status_code == 404 and "jwt" in response.json["error"]["message"]


# -- the Connect Accounts email ---------------------------------------------------------------------------------------
EMAIL_DEFAULTS = {
    "CONNECT_EMAIL_CONTACT_EMAIL": "support@acme.example",
    "CONNECT_EMAIL_COMPANY": "Acme",
    "CONNECT_EMAIL_TERMS_URL": "https://acme.example/terms",
    "CONNECT_EMAIL_PRIVACY_URL": "https://acme.example/privacy",
}


@pytest.fixture
def email_client(settings_env):
    return create_app({**settings_env, **EMAIL_DEFAULTS, "CONNECT_EMAIL_PER_USER": "3 per hour"}).test_client()


def send_email(client, body: object, user: str = "alice"):
    return client.post(f"/internal/v1/users/{user}/connect-email", json=body, headers=INTERNAL)


def test_the_email_is_sent_with_the_defaults_and_never_cached(email_client, emulator):
    first = send_email(email_client, {"to": "alice@example.com"})
    assert first.status_code == 202 and first.json["emailSent"] is True and first.json["expiresAt"].endswith("Z")
    second = send_email(email_client, {"to": "alice@example.com", "company": "Acme Ltd"})
    assert second.status_code == 202

    emails = emulator.emails()
    assert [email["to"] for email in emails] == ["alice@example.com"] * 2
    assert emails[0]["company"] == "Acme" and emails[1]["company"] == "Acme Ltd"
    assert emails[0]["termsUrl"] == "https://acme.example/terms" and emails[0]["profileKey"] == PROFILES["alice"]
    assert emails[0]["url"] != emails[1]["url"] and emulator.calls() == 2
    assert "url" not in first.json  # the link goes to the user's inbox, not to the caller


def test_revoke_also_revokes_the_emailed_link(email_client, emulator):
    send_email(email_client, {"to": "alice@example.com"})
    (email,) = emulator.emails()
    assert revoke(email_client).json["sessionsRevoked"] == 1
    assert requests.get(email["url"], timeout=5).status_code == 410


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "to"),
        ({"to": "not-an-address"}, "to"),
        ({"to": "a@example.com", "termsUrl": "http://acme.example/terms"}, "termsUrl"),
        ({"to": "a@example.com", "cc": "b@example.com"}, "cc"),
        (["to"], "body"),
    ],
)
def test_a_bad_email_request_is_a_400_naming_the_field(email_client, emulator, body, named):
    response = send_email(email_client, body)
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_email_request"
    assert named in response.json["error"]["message"] and emulator.calls() == 0


def test_a_field_without_a_default_names_the_setting_to_set(settings_env, emulator):
    client = create_app(settings_env).test_client()
    response = send_email(client, {"to": "a@example.com"})
    assert response.status_code == 400 and "CONNECT_EMAIL_CONTACT_EMAIL" in response.json["error"]["message"]
    assert emulator.calls() == 0


def test_the_email_has_its_own_per_user_limit(email_client, emulator):
    for _ in range(3):
        assert send_email(email_client, {"to": "alice@example.com"}).status_code == 202
    refused = send_email(email_client, {"to": "alice@example.com"})
    assert refused.status_code == 429 and refused.json["error"]["code"] == "email_budget_spent"
    assert "Retry-After" in refused.headers and emulator.calls() == 3
    assert send_email(email_client, {"to": "bob@example.com"}, user="bob").status_code == 202


def test_the_email_in_the_jwt_flow_goes_through_generate_jwt(settings_env, emulator):
    client = create_app({**settings_env, **EMAIL_DEFAULTS, "AYRSHARE_LINK_FLOW": "jwt"}).test_client()
    assert send_email(client, {"to": "alice@example.com"}).status_code == 202
    assert emulator.stats()["generate_calls"] == 1 and "jwt=" in emulator.emails()[0]["url"]


# -- what the log line and metrics say ------------------------------------------------------------------------------
@pytest.mark.parametrize("flow", ["session", "jwt"])
def test_the_request_log_line_and_metrics_name_the_flow(settings_env, emulator, capsys, flow):
    from prometheus_client import REGISTRY

    before = REGISTRY.get_sample_value("ayrshare_connect_upstream_calls_total", {"flow": flow, "outcome": "ok"}) or 0
    client = create_app({**settings_env, "AYRSHARE_LINK_FLOW": flow}).test_client()
    link(client)
    lines = [line for line in capsys.readouterr().out.splitlines() if '"msg":"request"' in line]
    assert f'"link_flow":"{flow}"' in lines[-1]
    after = REGISTRY.get_sample_value("ayrshare_connect_upstream_calls_total", {"flow": flow, "outcome": "ok"})
    assert after == before + 1
