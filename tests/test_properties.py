"""Property-based proof (hypothesis): no user id, signature, expiry, query string or header makes the service answer
5xx, call Ayrshare without a valid credential and valid options, or redirect anywhere but the linking host."""

from __future__ import annotations

import time
from urllib.parse import quote, unquote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service import create_app
from service.auth import sign
from service.upstream import AllowedLinkHosts
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.corpora import OPEN_REDIRECTS

PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
# Header values a client can actually send: latin-1, no line breaks (the HTTP layer would refuse the rest).
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=200)
any_text = st.text(max_size=300)
user_ids = st.one_of(
    st.sampled_from(["alice", "bob", "carol@example.com", "nobody", "Alice", "alice ", "../alice", "a" * 129]), any_text
)
expiries = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63).map(str),
    st.integers(min_value=-3600, max_value=30 * 86400).map(lambda delta: str(int(time.time()) + delta)),
    any_text,
)
signatures = st.one_of(st.text(alphabet="0123456789abcdefABCDEF", max_size=70), any_text)
queries = st.dictionaries(
    st.one_of(st.sampled_from(["expires", "signature", "redirect", "allowedSocial", "jwt", "user"]), any_text),
    any_text,
    max_size=6,
)


@pytest.fixture
def app_client(settings_env):
    env = {
        **settings_env,
        "CONNECT_AUTH": "signed,jwt,header",
        "JWT_HS256_SECRET": "JWT-HS-SECRET-e4c1b0a9f8d7e6c5b4a3f2e1d0c9b8a7",
        "JWT_ISSUER": "https://id.example.com/",
        "JWT_AUDIENCE": "connect",
        "JWT_COOKIE": "session",
        "TRUSTED_PROXIES": "10.0.0.0/24",
        "REDIRECT_ALLOWED_HOSTS": "app.example.com",
    }
    return create_app(env).test_client()


def assert_safe(response, link_hosts: AllowedLinkHosts) -> None:
    assert response.status_code < 500, response.get_data(as_text=True)
    location = response.headers.get("Location")
    if location is not None:
        assert link_hosts.allows(location), "redirected somewhere other than the linking host"


@PROPERTY_SETTINGS
@given(user=user_ids, expires=expiries, signature=signatures, extra=queries)
def test_no_unauthenticated_input_crashes_or_reaches_ayrshare(app_client, emulator, user, expires, signature, extra):
    calls = emulator.calls()
    query = {**extra, "expires": expires, "signature": signature}
    response = app_client.get("/connect/" + quote(user, safe=""), query_string=query)
    assert_safe(response, AllowedLinkHosts.parse((emulator.origin,)))
    if response.status_code < 400:  # only a genuine HMAC could get here; hypothesis does not find those
        assert sign(user, int(expires), SIGNING_SECRET) == signature.lower()
    assert emulator.calls() == calls


@PROPERTY_SETTINGS
@given(
    authorization=st.one_of(header_text, st.builds(lambda t: f"Bearer {t}", header_text)),
    cookie=header_text,
    proxy_user=st.one_of(st.sampled_from(["alice", " alice ", "alice,bob", "bob", "ALICE"]), header_text),
    forwarded_for=header_text,
    accept=header_text,
    origin=header_text,
    peer=st.sampled_from(["127.0.0.1", "10.0.0.7", "192.0.2.1", "::1"]),
)
def test_no_header_crashes_or_reaches_ayrshare(
    app_client, emulator, authorization, cookie, proxy_user, forwarded_for, accept, origin, peer
):
    calls = emulator.calls()
    headers = {
        "Authorization": authorization,
        "Cookie": f"session={cookie}",
        "X-Forwarded-User": proxy_user,
        "X-Forwarded-For": forwarded_for,
        "Accept": accept,
        "Origin": origin,
    }
    response = app_client.get("/connect/alice", headers=headers, environ_base={"REMOTE_ADDR": peer})
    assert_safe(response, AllowedLinkHosts.parse((emulator.origin,)))
    trusted_proxy_vouches = peer == "10.0.0.7" and proxy_user.strip() == "alice"
    if response.status_code < 400:
        assert trusted_proxy_vouches or authorization.strip() == f"Bearer {INTERNAL_TOKEN}"
    else:
        assert emulator.calls() == calls


CORPUS = OPEN_REDIRECTS
redirects = st.one_of(
    st.sampled_from([unquote_plus(line) for line in CORPUS.read_text(encoding="utf-8").splitlines()]),
    st.builds(lambda path: "https://app.example.com/" + quote(path), any_text),  # allowed: must work
    st.builds(lambda host, path: f"https://{host}/{path}", any_text, any_text),
    any_text,
)
networks = st.one_of(
    st.lists(st.sampled_from(["facebook", "twitter", "tiktok", "myspace", "FaceBook", " "]), max_size=4).map(",".join),
    any_text,
)


@PROPERTY_SETTINGS
@given(redirect=redirects, allowed_social=networks, junk=queries)
def test_authenticated_hostile_options_are_400_or_a_link_on_the_linking_host(
    app_client, emulator, redirect, allowed_social, junk
):
    calls = emulator.calls()
    expires = int(time.time()) + 300
    query = {**junk, "redirect": redirect, "allowedSocial": allowed_social}
    options = {"redirect": redirect, "allowedSocial": allowed_social}
    query.update(expires=str(expires), signature=sign("alice", expires, SIGNING_SECRET, options))
    response = app_client.get("/connect/alice", query_string=query)
    assert_safe(response, AllowedLinkHosts.parse((emulator.origin,)))
    line_break = any(c in redirect + allowed_social for c in "\r\n")  # no signature covers one: 403
    assert response.status_code in ((403,) if line_break else (302, 400))
    if response.status_code in (400, 403):
        assert emulator.calls() == calls
    else:
        assert redirect.startswith("https://app.example.com/")
        sent = emulator.stats()["requests"][-1]["options"] if emulator.calls() > calls else None
        assert sent is None or sent["redirect"] == redirect
