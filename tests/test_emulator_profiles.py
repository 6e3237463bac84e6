"""The emulator's Profiles API over real HTTP: create, delete, user details, unlink, the linking page's buttons,
the fault knobs and the counters, against an emulator with a profiles file and one that accepts any key."""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.emulator_proc import EmulatorProcess, press

DOMAIN = "ACME"
API_KEY = "API-KEY-PRIMARY"
FILE_KEY = "PROFILE-KEY-1"
PROFILES = {FILE_KEY: "Alice", "PROFILE-KEY-2": "Bob"}
PROFILE_KEY_SHAPE = re.compile(r"^[A-Z0-9]{7}-[A-Z0-9]{7}-[A-Z0-9]{7}-[A-Z0-9]{7}$")
REF_ID_SHAPE = re.compile(r"^[0-9a-f]{40}$")


@pytest.fixture(scope="module")
def registered_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def public_key_path(registered_key, tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_bytes(
        registered_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


@pytest.fixture(scope="module")
def emulator_process(public_key_path):
    with EmulatorProcess(DOMAIN, public_key_path, [API_KEY], profiles=PROFILES) as process:
        yield process


@pytest.fixture(scope="module")
def open_emulator_process(public_key_path):
    """An emulator without a profiles file: any profile key is accepted, unless created and deleted since."""
    with EmulatorProcess(DOMAIN, public_key_path, [API_KEY]) as process:
        yield process


@pytest.fixture
def emulator(emulator_process):
    emulator_process.reset()
    yield emulator_process


@pytest.fixture
def open_emulator(open_emulator_process):
    open_emulator_process.reset()
    yield open_emulator_process


def call(emulator, method, path, body=None, profile_key=None, api_key=API_KEY, **kwargs) -> requests.Response:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if profile_key is not None:
        headers["Profile-Key"] = profile_key
    return requests.request(method, f"{emulator.base_url}{path}", json=body, headers=headers, timeout=10, **kwargs)


def create(emulator, title="Carol", **fields) -> requests.Response:
    return call(emulator, "POST", "/profiles", {"title": title, **fields})


def created_key(emulator, title="Carol", **fields) -> str:
    response = create(emulator, title, **fields)
    assert response.status_code == 200, response.text
    return response.json()["profileKey"]


def user(emulator, profile_key=None) -> requests.Response:
    return call(emulator, "GET", "/user", profile_key=profile_key)


def session_url(emulator, profile_key, **fields) -> str:
    response = call(emulator, "POST", "/profiles/link-sessions", fields, profile_key=profile_key)
    assert response.status_code == 200, response.text
    return response.json()["url"]


def assert_error(response, status, code=None, action="profiles") -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["action"] == action and isinstance(body["message"], str)
    if code is not None:
        assert body["code"] == code
    return body


# --- create ---


def test_create_answers_the_documented_shape_with_a_fresh_key(emulator):
    response = create(emulator, "Carol", messagingActive=False, tags=["trial"], someFutureField=1)
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["status", "title", "refId", "profileKey"]
    assert body["status"] == "success" and body["title"] == "Carol"
    assert PROFILE_KEY_SHAPE.match(body["profileKey"]) and REF_ID_SHAPE.match(body["refId"])
    assert emulator.created_profiles() == {
        "count": 1,
        "profiles": [{"title": "Carol", "refId": body["refId"], "activeSocialAccounts": []}],
        "deleted": 0,
    }
    assert created_key(emulator, "Dave") != body["profileKey"]
    assert emulator.profile_stats()["creates"] == 2


def test_a_created_key_works_for_generate_jwt_link_sessions_and_user(emulator, registered_key):
    key = created_key(emulator, "Carol")
    pem = registered_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    jwt_answer = call(
        emulator, "POST", "/profiles/generateJWT", {"domain": DOMAIN, "privateKey": pem, "profileKey": key}
    )
    assert jwt_answer.status_code == 200 and jwt_answer.json()["title"] == "Carol"
    session = call(emulator, "POST", "/profiles/link-sessions", {}, profile_key=key)
    assert session.status_code == 200 and session.json()["title"] == "Carol"
    page = requests.get(session.json()["url"], timeout=10)
    assert page.status_code == 200 and "Carol" in page.text

    details = user(emulator, key)
    assert details.status_code == 200
    body = details.json()
    assert "activeSocialAccounts" not in body  # the vendor's page: absent while nothing is linked
    assert body["displayNames"] == [] and body["title"] == "Carol"
    assert body["refId"] == emulator.created_profiles()["profiles"][0]["refId"]
    assert set(body["created"]) == {"_seconds", "_nanoseconds", "utc"}
    assert abs(body["created"]["_seconds"] - time.time()) < 60


def test_a_duplicate_title_is_refused_and_creates_nothing(emulator):
    created_key(emulator, "Carol")
    body = assert_error(create(emulator, "Carol"), 400, 101)
    assert "title already exists" in body["message"].lower()
    assert_error(create(emulator, "Alice"), 400, 101)  # a profiles-file title is taken too
    assert create(emulator, "carol").status_code == 200  # titles are case-sensitive
    assert emulator.created_profiles()["count"] == 2


@pytest.mark.parametrize(
    "body",
    [{}, {"title": ""}, {"title": 7}, {"title": "X", "tags": "a"}, {"title": "X", "disableSocial": ["myspace"]}],
    ids=["no-title", "empty-title", "number-title", "tags-not-array", "unknown-network"],
)
def test_an_invalid_create_body_is_refused(emulator, body):
    assert_error(call(emulator, "POST", "/profiles", body), 400, 101)
    assert emulator.created_profiles()["count"] == 0


def test_create_needs_the_api_key(emulator):
    assert_error(call(emulator, "POST", "/profiles", {"title": "X"}, api_key="WRONG"), 403, 102)
    assert_error(call(emulator, "POST", "/profiles", {"title": "X"}, api_key=None), 403, 102)
    assert emulator.created_profiles()["count"] == 0


# --- delete ---


def test_a_deleted_key_is_refused_everywhere(emulator):
    key = created_key(emulator, "Carol")
    ref_id = emulator.created_profiles()["profiles"][0]["refId"]
    response = call(emulator, "DELETE", "/profiles", profile_key=key)
    assert response.status_code == 200 and response.json() == {"status": "success", "refId": ref_id}
    assert emulator.created_profiles() == {"count": 0, "profiles": [], "deleted": 1}

    assert_error(user(emulator, key), 400, 101, action="user")
    assert_error(call(emulator, "DELETE", "/profiles", profile_key=key), 400, 101)
    assert_error(call(emulator, "DELETE", "/profiles/social", {"platform": "twitter"}, profile_key=key), 400, 101)
    assert_error(call(emulator, "POST", "/profiles/link-sessions", {}, profile_key=key), 400, 101, "linkSession")
    assert create(emulator, "Carol").status_code == 200  # the title is free again
    assert emulator.profile_stats()["deletes"] == 2


def test_a_profiles_file_key_can_be_deleted_and_a_profile_by_title(emulator):
    url = session_url(emulator, FILE_KEY)
    assert call(emulator, "DELETE", "/profiles", profile_key=FILE_KEY).status_code == 200
    assert_error(user(emulator, FILE_KEY), 400, 101, action="user")
    assert requests.get(url, timeout=10).status_code == 401  # its open links stop working too

    created_key(emulator, "Carol")
    assert call(emulator, "DELETE", "/profiles", {"title": "Carol"}).status_code == 200
    assert_error(call(emulator, "DELETE", "/profiles", {"title": "Carol"}), 400, 101)
    assert_error(call(emulator, "DELETE", "/profiles"), 400, 101)


def test_any_key_is_accepted_without_a_profiles_file_until_deleted(open_emulator):
    assert user(open_emulator, "SOME-KEY").status_code == 200
    key = created_key(open_emulator, "Carol")
    assert user(open_emulator, key).json()["title"] == "Carol"
    for gone in (key, "SOME-KEY"):
        assert call(open_emulator, "DELETE", "/profiles", profile_key=gone).status_code == 200
        assert_error(user(open_emulator, gone), 400, 101, action="user")
    assert user(open_emulator, "OTHER-KEY").status_code == 200
    assert_error(user(open_emulator, API_KEY), 400, 101, action="user")  # the API key is never a profile key


def test_reset_forgets_created_and_deleted_profiles(emulator):
    key = created_key(emulator, "Carol")
    call(emulator, "DELETE", "/profiles", profile_key=FILE_KEY)
    emulator.reset()
    assert emulator.created_profiles() == {"count": 0, "profiles": [], "deleted": 0}
    assert_error(user(emulator, key), 400, 101, action="user")
    assert user(emulator, FILE_KEY).status_code == 200


# --- user details and the linking page ---


def test_user_without_profile_key_answers_for_the_primary_profile(emulator):
    body = user(emulator).json()
    assert body["title"] == "Primary Profile" and REF_ID_SHAPE.match(body["refId"])
    assert emulator.profile_stats()["user_reads"] == 1


def test_linking_page_links_and_unlinks_what_get_user_then_shows(emulator):
    key = created_key(emulator, "Carol")
    page = requests.get(session_url(emulator, key, allowedSocial=["twitter", "linkedin"]), timeout=10)
    assert page.status_code == 200
    assert re.findall(r'<li id="network-(\w+)"', page.text) == ["twitter", "linkedin"]
    assert "form-action 'self'" in page.headers["Content-Security-Policy"]
    assert 'id="done"' in page.text  # the Done button is still there

    page = press(page, "twitter", "link")
    assert page.status_code == 200 and page.history[0].status_code == 303
    assert 'id="network-twitter" data-linked="true"' in page.text
    press(page, "linkedin", "link")
    body = user(emulator, key).json()
    assert body["activeSocialAccounts"] == ["linkedin", "twitter"]
    entry = {entry["platform"]: entry for entry in body["displayNames"]}["twitter"]
    assert {"created", "displayName", "id", "platform", "profileUrl", "userImage", "username"} <= set(entry)
    assert emulator.created_profiles()["profiles"][0]["activeSocialAccounts"] == ["linkedin", "twitter"]

    press(page, "twitter", "unlink")
    assert user(emulator, key).json()["activeSocialAccounts"] == ["linkedin"]
    assert user(emulator, FILE_KEY).json().get("activeSocialAccounts") is None  # other profiles are untouched


def test_linking_page_offers_every_network_but_the_disabled_ones_and_works_in_the_jwt_flow(emulator, registered_key):
    key = created_key(emulator, "Carol", disableSocial=["tiktok"])
    pem = registered_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    answer = call(emulator, "POST", "/profiles/generateJWT", {"domain": DOMAIN, "privateKey": pem, "profileKey": key})
    page = requests.get(answer.json()["url"], timeout=10)
    offered = re.findall(r'<li id="network-(\w+)"', page.text)
    assert "tiktok" not in offered and {"twitter", "facebook", "youtube"} <= set(offered)
    press(page, "facebook", "link")
    assert user(emulator, key).json()["activeSocialAccounts"] == ["facebook"]


def test_linking_page_refuses_a_network_it_does_not_offer_and_a_revoked_session(emulator):
    url = session_url(emulator, FILE_KEY, allowedSocial=["twitter"])
    fields = {name: values[0] for name, values in parse_qs(urlsplit(url).query).items()}
    origin = emulator.origin
    assert (
        requests.post(f"{origin}/", data={**fields, "network": "facebook", "op": "link"}, timeout=10).status_code == 400
    )
    answer = call(emulator, "POST", "/profiles/link-sessions", {}, profile_key=FILE_KEY).json()
    revoked_fields = {name: values[0] for name, values in parse_qs(urlsplit(answer["url"]).query).items()}
    call(emulator, "DELETE", f"/profiles/link-sessions/{answer['sessionId']}")
    response = requests.post(f"{origin}/", data={**revoked_fields, "network": "twitter", "op": "link"}, timeout=10)
    assert response.status_code == 410
    assert user(emulator, FILE_KEY).json().get("activeSocialAccounts") is None


# --- unlink ---


def test_unlink_removes_a_network_and_succeeds_when_it_is_not_linked(emulator):
    key = created_key(emulator, "Carol")
    press(requests.get(session_url(emulator, key), timeout=10), "twitter", "link")
    response = call(emulator, "DELETE", "/profiles/social", {"platform": "twitter"}, profile_key=key)
    assert response.status_code == 200
    assert response.json() == {"status": "success", "platform": "twitter", "refId": user(emulator, key).json()["refId"]}
    assert "activeSocialAccounts" not in user(emulator, key).json()
    # The vendor's page: a 200 even if the platform is not linked.
    assert call(emulator, "DELETE", "/profiles/social", {"platform": "twitter"}, profile_key=key).status_code == 200
    assert emulator.profile_stats()["social_unlinks"] == 2


@pytest.mark.parametrize("body", [{}, {"platform": "myspace"}, {"platform": "pinterest"}, None])
def test_unlink_refuses_a_platform_it_cannot_unlink(emulator, body):
    assert_error(call(emulator, "DELETE", "/profiles/social", body, profile_key=FILE_KEY), 400, 101)


# --- knobs, limits and counters ---


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/profiles", {"title": "Carol"}),
        ("DELETE", "/profiles", None),
        ("GET", "/user", None),
        ("DELETE", "/profiles/social", {"platform": "twitter"}),
    ],
    ids=["create", "delete", "user", "unlink"],
)
def test_transport_faults_apply_to_every_profiles_endpoint(emulator, method, path, body):
    emulator.set_knobs(fault="429")
    first = call(emulator, method, path, body, profile_key=FILE_KEY)
    assert first.status_code == 429 and first.headers["x-ratelimit-max"] == first.headers["x-ratelimit-count"]
    assert "Retry-After" not in first.headers
    emulator.set_knobs(fault="500", fault_count=2)
    assert call(emulator, method, path, body, profile_key=FILE_KEY).status_code == 500
    assert emulator.created_profiles()["count"] == 0  # the fault answers before anything is created
    assert user(emulator, FILE_KEY).status_code == 500  # the second 500 is served to whatever comes next
    assert emulator.stats()["faults_served"] == 3 and user(emulator, FILE_KEY).status_code == 200


def test_latency_knob_holds_profiles_answers(emulator):
    emulator.set_knobs(latency_ms=300)
    started = time.monotonic()
    assert user(emulator, FILE_KEY).status_code == 200
    assert time.monotonic() - started >= 0.3


def test_rate_limit_counts_per_profile_and_creates_against_the_primary_profile(emulator):
    emulator.set_knobs(rate_limit_max=2)
    assert [user(emulator, FILE_KEY).status_code for _ in range(3)] == [200, 200, 429]
    assert user(emulator, "PROFILE-KEY-2").status_code == 200
    third = [create(emulator, f"P{n}").status_code for n in range(3)][-1]
    assert third == 429 and emulator.created_profiles()["count"] == 2
    limited = user(emulator, FILE_KEY)
    assert limited.headers["x-ratelimit-max"] == "2" and limited.headers["x-ratelimit-count"] == "4"


def test_missing_profile_key_fault_creates_the_profile_but_answers_without_its_key(emulator):
    emulator.set_knobs(fault="missing_profile_key")
    response = create(emulator, "Carol")
    assert response.status_code == 200 and "profileKey" not in response.json() and "refId" in response.json()
    assert emulator.created_profiles()["count"] == 1  # orphaned: created, but nobody got its key
    assert "profileKey" in create(emulator, "Dave").json()  # one-shot
