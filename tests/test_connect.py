"""`GET /connect/<user>` end to end through Flask, the real emulator and the real Redis."""

from __future__ import annotations

import re
import time
from datetime import datetime
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import requests

from service.auth import sign, signed_path
from tests.conftest import API_KEY, INTERNAL_TOKEN, PROFILES, SIGNING_SECRET

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

JSON = {"Accept": "application/json"}


def signed(user: str, ttl: int = 300) -> str:
    return signed_path(user, SIGNING_SECRET, ttl)


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["jwt"][0]


def linking_page(url: str) -> tuple[str, float]:
    """Open the URL at the emulator, as the user's browser would: (the profile key it shows, when it expires)."""
    page = requests.get(url, timeout=5)
    assert page.status_code == 200
    profile_key = re.search(r'id="profile-key">([^<]+)<', page.text).group(1)
    expires = re.search(r'id="expires-at" datetime="([^"]+)"', page.text).group(1)
    return profile_key, datetime.fromisoformat(expires).timestamp()


def test_redirects_to_the_linking_page_of_the_users_profile(client, emulator, link_flow):
    response = client.get(signed("alice"))

    assert response.status_code == 302
    location = response.headers["Location"]
    assert location.startswith(emulator.origin)
    assert linking_page(location)[0] == PROFILES["alice"]
    assert emulator.calls() == 1
    assert ("jwt" if link_flow == "jwt" else "session") in parse_qs(urlsplit(location).query)


def test_every_link_response_forbids_caching_and_referrers(client, emulator):
    for headers in ({}, JSON):
        response = client.get(signed("alice"), headers=headers)
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Referrer-Policy"] == "no-referrer"


def test_json_mode_returns_url_expiry_and_cache_flag(client, emulator):
    first = client.get(signed("bob"), headers=JSON)
    second = client.get(signed("bob"), headers={"Accept": "application/json, text/html;q=0.5"})

    assert first.status_code == 200 and second.status_code == 200
    assert first.json["cached"] is False and second.json["cached"] is True
    assert first.json["url"] == second.json["url"]
    expires_at = first.json["expiresAt"]
    assert expires_at.endswith("Z")
    _, page_expiry = linking_page(first.json["url"])
    assert time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(page_expiry)) == expires_at[:19]


def test_browser_accept_header_gets_the_redirect(client, emulator):
    browser = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    assert client.get(signed("alice"), headers={"Accept": browser}).status_code == 302
    assert client.get(signed("alice"), headers={"Accept": "*/*"}).status_code == 302


def test_second_request_is_served_from_cache_without_an_upstream_call(client, emulator):
    first = client.get(signed("alice"))
    second = client.get(signed("alice"))

    assert first.headers["Location"] == second.headers["Location"]
    assert emulator.calls() == 1


def test_cache_entry_in_redis_holds_no_secret_in_its_key(client, emulator, redis_client):
    client.get(signed("alice"))
    # Rate-limit counters (prefix LIMITS:) share the Redis; this test is about the link cache entry and the
    # user's index of links handed out (connect:user:v1:...), which revoke reads.
    keys = sorted(key.decode() for key in redis_client.keys("*") if not key.startswith(b"LIMITS:"))
    assert len(keys) == 2 and keys[0].startswith("connect:link:v1:") and keys[1].startswith("connect:user:v1:")
    assert not any(PROFILES["alice"] in key or API_KEY in key or "alice" in key for key in keys)
    ttl = redis_client.pttl(keys[0]) / 1000
    assert 300 - 15 - 5 < ttl <= 300 - 15  # kept until LINK_STALE_MIN_SECONDS before the token's exp


def test_link_with_less_than_the_margin_left_is_never_served(settings_env, emulator):
    from service import create_app

    # Tokens live 90 s; with a 60 s margin a cached link is usable for ~30 s, then a new one is fetched.
    emulator.set_knobs(token_lifetime_seconds=90)
    client = create_app({**settings_env, "LINK_MIN_REMAINING_SECONDS": "89"}).test_client()
    first = client.get(signed("alice"), headers=JSON).json
    time.sleep(1.2)
    second = client.get(signed("alice"), headers=JSON).json

    assert emulator.calls() == 2
    assert second["cached"] is False and second["url"] != first["url"]


def test_exp_from_the_token_is_the_truth_not_the_requested_expires_in(settings_env, emulator, redis_client):
    from service import create_app

    emulator.set_knobs(token_lifetime_seconds=200)  # upstream ignores our expiresIn of 30 minutes
    client = create_app({**settings_env, "AYRSHARE_EXPIRES_IN": "30"}).test_client()
    body = client.get(signed("alice"), headers=JSON).json
    assert linking_page(body["url"])[1] - time.time() < 201
    (key,) = redis_client.keys("connect:link:v1:*")
    assert redis_client.pttl(key) / 1000 <= 200 - 15
    assert emulator.stats()["requests"][-1]["options"]["expiresIn"] == 30


def test_unknown_user_is_404_without_upstream_call(client, emulator):
    response = client.get(signed("mallory"), headers=JSON)
    assert response.status_code == 404
    assert response.json["error"]["code"] == "unknown_user"
    assert emulator.calls() == 0


@pytest.mark.parametrize("user", ["a" * 129, "al ice", "alice/../bob", "-alice", "ali%00ce", "ålice", "a:b", "a;b"])
def test_malformed_user_ids_are_400(client, emulator, user):
    expires = int(time.time()) + 300
    response = client.get(
        "/connect/" + user,
        query_string={"expires": expires, "signature": sign(unquote(user), expires, SIGNING_SECRET)},
        headers=JSON,
    )
    assert response.status_code in (400, 404)  # 404 only where the path itself cannot route
    if response.status_code == 400:
        assert response.json["error"]["code"] == "bad_user_id"
    assert emulator.calls() == 0


def test_internal_bearer_token_may_open_any_users_link(client, emulator):
    response = client.get("/connect/carol@example.com", headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"})
    assert response.status_code == 302
    assert emulator.calls() == 1


def test_error_pages_are_html_for_browsers_and_json_for_api_callers(client, emulator):
    html = client.get("/connect/alice", headers={"Accept": "text/html"})
    api = client.get("/connect/alice", headers=JSON)
    assert html.status_code == api.status_code == 401
    assert html.mimetype == "text/html" and "This link is missing its signature." in html.get_data(as_text=True)
    message = api.json["error"]["message"]
    assert api.mimetype == "application/problem+json"
    assert api.json == {
        "type": "https://ayrshare-connect.dev/problems/auth_required",
        "title": "Auth required",
        "status": 401,
        "detail": message,
        "code": "auth_required",
        "requestId": api.headers["X-Request-ID"],
        "error": {"code": "auth_required", "message": message},
    }
    assert html.headers["Cache-Control"] == "no-store"


def test_unknown_route_gets_the_json_error_shape(client):
    response = client.get("/nope", headers=JSON)
    assert response.status_code == 404 and response.json["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/connect//alice", "/connect/alice/", "//connect/alice"])
def test_odd_paths_are_not_redirected_anywhere(client, emulator, path):
    response = client.get(path, headers={"Host": "evil.example"})
    assert response.status_code == 404 and "Location" not in response.headers
    assert emulator.calls() == 0
