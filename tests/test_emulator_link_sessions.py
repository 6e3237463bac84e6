"""The emulator's Link Sessions API over real HTTP: create, read, revoke, the linking page, emails, limits, knobs.

The last tests build the app in-process to look at what its state keeps.
"""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from emulator import EmulatorConfig, create_app
from emulator.state import token_fingerprint
from tests.support.emulator_proc import EmulatorProcess

DOMAIN = "ACME"
API_KEY = "API-KEY-PRIMARY"
SECOND_API_KEY = "API-KEY-ROTATED"
PROFILE_KEY = "PROFILE-KEY-1"
OTHER_PROFILE_KEY = "PROFILE-KEY-2"
# Markup in a title proves the linking page escapes what it shows.
PROFILES = {PROFILE_KEY: "Alice <b>Shop</b>", OTHER_PROFILE_KEY: "Bob"}
AUDIENCE = "https://app.ayrshare.com"
TEN_YEARS = 10 * 365 * 24 * 3600
EMAIL = {
    "to": "user@example.com",
    "contactEmail": "support@app.example",
    "company": "App Inc.",
    "termsUrl": "https://app.example/terms",
    "privacyUrl": "https://app.example/privacy",
}
SESSION_ID = re.compile(r"^[0-9a-f]{64}$")
SESSION_TOKEN = re.compile(r"^ayr_ls_[A-Za-z0-9_-]{43}$")
VENDOR_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def registered_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def emulator(registered_key, tmp_path_factory):
    public_key_path = tmp_path_factory.mktemp("keys") / "public.pem"
    public_key_path.write_bytes(
        registered_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    with EmulatorProcess(DOMAIN, public_key_path, [API_KEY, SECOND_API_KEY], profiles=PROFILES) as process:
        yield process


@pytest.fixture(autouse=True)
def clean_emulator(emulator):
    emulator.reset()
    yield


@pytest.fixture
def create(emulator):
    """POST a Link Session create with a valid request, overridable per test (`no_body=True` sends no body at all)."""

    def _create(
        body: dict | None = None,
        api_key: str | None = API_KEY,
        profile_key: str | None = PROFILE_KEY,
        timeout: float = 10,
        no_body: bool = False,
        **fields,
    ) -> requests.Response:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        if profile_key is not None:
            headers["Profile-Key"] = profile_key
        payload = None if no_body else {**(body or {}), **fields}
        return requests.post(
            f"{emulator.base_url}/profiles/link-sessions", json=payload, headers=headers, timeout=timeout
        )

    return _create


@pytest.fixture
def session_call(emulator):
    """GET or DELETE one session: `session_call("get", session_id, api_key=...)`."""

    def _call(method: str, session_id: str, api_key: str | None = API_KEY, timeout: float = 10, **headers):
        all_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        all_headers.update(headers)
        url = f"{emulator.base_url}/profiles/link-sessions/{session_id}"
        return requests.request(method, url, headers=all_headers, timeout=timeout)

    return _call


@pytest.fixture
def generate(emulator, registered_key):
    """POST generateJWT with a valid body (for what both link flows share)."""
    private_pem = registered_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()

    def _generate(**fields) -> requests.Response:
        body = {"domain": DOMAIN, "privateKey": private_pem, "profileKey": PROFILE_KEY, **fields}
        return requests.post(
            f"{emulator.base_url}/profiles/generateJWT",
            json=body,
            headers={"Authorization": f"Bearer {API_KEY}"},
            timeout=10,
        )

    return _generate


def _assert_error(response: requests.Response, status: int, code: int | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["action"] == "linkSession" and body["status"] == "error" and isinstance(body["message"], str)
    if code is not None:
        assert body["code"] == code
    return body


def _time(value: str) -> float:
    assert VENDOR_TIME.match(value), value
    return datetime.fromisoformat(value).timestamp()


def _token(url: str) -> str:
    return parse_qs(urlsplit(url).query)["session"][0]


def _open(url: str) -> requests.Response:
    return requests.get(url, timeout=10)


# --- create ---


def test_create_answers_the_documented_shape(emulator, create):
    before = time.time()
    response = create({})
    assert response.status_code == 200, response.text
    body = response.json()
    assert list(body) == ["status", "sessionId", "url", "expiresAt", "emailSent", "title"]
    assert body["status"] == "success" and body["emailSent"] is False and body["title"] == PROFILES[PROFILE_KEY]
    assert SESSION_ID.match(body["sessionId"])

    url = urlsplit(body["url"])
    assert f"{url.scheme}://{url.netloc}" == emulator.origin and url.path == "/"
    assert url.query.startswith("session=ayr_ls_")
    query = parse_qs(url.query)
    assert set(query) == {"session", "domain"} and query["domain"] == [DOMAIN]
    token = query["session"][0]
    assert SESSION_TOKEN.match(token) and body["sessionId"] not in body["url"]

    assert before + 300 - 1 <= _time(body["expiresAt"]) <= time.time() + 300 + 1  # documented default: 5 minutes
    assert response.headers["x-ratelimit-max"] == "300" and response.headers["x-ratelimit-count"] == "1"
    assert "Retry-After" not in response.headers


def test_every_create_is_a_new_session_with_a_new_token(create):
    first, second = create().json(), create().json()
    assert first["sessionId"] != second["sessionId"] and _token(first["url"]) != _token(second["url"])


@pytest.mark.parametrize("body", [None, {}, {"nonsense": 1, "profileKey": "ignored"}, {"expiresIn": None}])
def test_body_may_be_absent_or_empty_and_unknown_or_null_fields_are_ignored(create, body):
    response = create(body, no_body=body is None)
    assert response.status_code == 200, response.text
    assert response.json()["title"] == PROFILES[PROFILE_KEY]


@pytest.mark.parametrize(("minutes", "seconds"), [(60, 3600), (1, 60), (1.5, 90), (2880, 172_800)])
def test_expires_in_sets_the_lifetime(create, session_call, minutes, seconds):
    body = create(expiresIn=minutes).json()
    status = session_call("get", body["sessionId"]).json()
    assert _time(status["expiresAt"]) - _time(status["createdAt"]) == pytest.approx(seconds, abs=0.002)
    assert status["expiresAt"] == body["expiresAt"]


@pytest.mark.parametrize("value", [0, 2881, -5, "30", True, [5]])
def test_expires_in_out_of_range_or_not_a_number_is_refused(create, value):
    assert "expiresIn" in _assert_error(create(expiresIn=value), 400, 101)["message"]


@pytest.mark.parametrize(
    "fields",
    [{"redirect": 5}, {"allowedSocial": "twitter"}, {"allowedSocial": [1]}, {"logout": "yes"}, {"origin": 1}],
)
def test_mistyped_options_are_400_101(create, fields):
    _assert_error(create(fields), 400, 101)


def test_a_body_that_is_not_an_object_is_400_101(emulator):
    response = requests.post(
        f"{emulator.base_url}/profiles/link-sessions",
        json=["expiresIn", 5],
        headers={"Authorization": f"Bearer {API_KEY}", "Profile-Key": PROFILE_KEY},
        timeout=10,
    )
    _assert_error(response, 400, 101)


def test_valid_options_are_accepted(create):
    response = create(redirect="https://app.example/", allowedSocial=["x"], logout=True, origin="https://app.example")
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("profile_key", "words"),
    [(None, "Profile-Key"), ("", "Profile-Key"), ("NOT-A-PROFILE", "Profile Key not found"), (API_KEY, "API Key")],
)
def test_missing_unknown_or_api_key_profile_key_is_400_101(create, profile_key, words):
    assert words in _assert_error(create(profile_key=profile_key), 400, 101)["message"]


@pytest.mark.parametrize("api_key", ["WRONG-KEY", None])
def test_invalid_or_missing_api_key_is_403_102_before_anything_else(create, api_key):
    response = create(api_key=api_key, profile_key=None, expiresIn=0)
    assert "API Key not valid" in _assert_error(response, 403, 102)["message"]
    assert response.headers["x-ratelimit-count"] == "0"  # a rejected caller does not use up the profile's quota


def test_any_configured_api_key_may_create(create):
    assert create(api_key=SECOND_API_KEY).status_code == 200


# --- read and revoke ---


def test_states_go_pending_active_revoked_and_count_each_open(create, session_call):
    body = create(redirect="https://app.example/done").json()
    session_id = body["sessionId"]

    pending = session_call("get", session_id).json()
    assert list(pending) == ["status", "sessionId", "state", "createdAt", "expiresAt", "useCount"]
    assert pending["status"] == "success" and pending["sessionId"] == session_id
    assert pending["state"] == "pending" and pending["useCount"] == 0
    assert _time(pending["createdAt"]) < _time(pending["expiresAt"]) == _time(body["expiresAt"])

    opened_at = time.time()
    assert _open(body["url"]).status_code == 200
    active = session_call("get", session_id).json()
    assert active["state"] == "active" and active["useCount"] == 1
    assert active["firstUsedAt"] == active["lastUsedAt"]
    assert abs(_time(active["firstUsedAt"]) - opened_at) < 5

    time.sleep(0.01)
    assert _open(body["url"]).status_code == 200
    again = session_call("get", session_id).json()
    assert again["useCount"] == 2 and again["firstUsedAt"] == active["firstUsedAt"]
    assert _time(again["lastUsedAt"]) > _time(again["firstUsedAt"])

    revoked = session_call("delete", session_id)
    assert revoked.status_code == 200
    assert revoked.json() == {"status": "success", "sessionId": session_id, "state": "revoked"}
    after = session_call("get", session_id).json()
    assert after["state"] == "revoked" and after["useCount"] == 2

    page = _open(body["url"])
    assert page.status_code == 410 and 'data-reason="revoked"' in page.text
    assert session_call("get", session_id).json()["useCount"] == 2  # a refused open is not a use


def test_revoke_is_idempotent(create, session_call):
    session_id = create().json()["sessionId"]
    first, second = session_call("delete", session_id), session_call("delete", session_id)
    assert first.status_code == second.status_code == 200
    assert first.json() == second.json() == {"status": "success", "sessionId": session_id, "state": "revoked"}


@pytest.mark.parametrize("method", ["get", "delete"])
def test_unknown_and_other_api_keys_sessions_are_the_same_404(create, session_call, method):
    session_id = create().json()["sessionId"]
    unknown = _assert_error(session_call(method, "0" * 64), 404)
    foreign = _assert_error(session_call(method, session_id, api_key=SECOND_API_KEY), 404)
    assert (
        unknown
        == foreign
        == {
            "action": "linkSession",
            "status": "error",
            "code": 404,
            "message": "Link session not found.",
        }
    )
    assert session_call("get", session_id).json()["state"] == "pending"  # the other key's DELETE revoked nothing


@pytest.mark.parametrize("method", ["get", "delete"])
@pytest.mark.parametrize("api_key", ["WRONG-KEY", None])
def test_read_and_revoke_need_the_api_key(create, session_call, method, api_key):
    session_id = create().json()["sessionId"]
    _assert_error(session_call(method, session_id, api_key=api_key), 403, 102)
    assert session_call("get", session_id).json()["state"] == "pending"


def test_profile_key_header_is_accepted_and_ignored_on_read_and_revoke(create, session_call):
    session_id = create().json()["sessionId"]
    assert session_call("get", session_id, **{"Profile-Key": OTHER_PROFILE_KEY}).json()["state"] == "pending"
    assert session_call("delete", session_id, **{"Profile-Key": "NOT-A-PROFILE"}).status_code == 200


def test_expiry_and_revoked_stays_revoked_after_expiry(emulator, create, session_call):
    emulator.set_knobs(token_lifetime_seconds=1)
    to_expire, to_revoke = create().json(), create().json()
    assert _time(to_expire["expiresAt"]) - time.time() <= 1.1
    session_call("delete", to_revoke["sessionId"])
    time.sleep(1.2)

    assert session_call("get", to_expire["sessionId"]).json()["state"] == "expired"
    page = _open(to_expire["url"])
    assert page.status_code == 401 and 'data-reason="expired"' in page.text
    assert session_call("get", to_expire["sessionId"]).json()["useCount"] == 0

    assert session_call("get", to_revoke["sessionId"]).json()["state"] == "revoked"
    assert 'data-reason="revoked"' in _open(to_revoke["url"]).text
    assert session_call("delete", to_expire["sessionId"]).json()["state"] == "revoked"  # an expired one can be revoked


def test_token_lifetime_knob_sets_the_session_lifetime(emulator, create, session_call):
    emulator.set_knobs(token_lifetime_seconds=7)
    status = session_call("get", create(expiresIn=60).json()["sessionId"]).json()
    assert _time(status["expiresAt"]) - _time(status["createdAt"]) == pytest.approx(7, abs=0.002)


# --- linking page ---


def test_linking_page_shows_the_session_profile_escaped_with_protective_headers(create):
    body = create(allowedSocial=["twitter", "<script>x</script>"], redirect="https://app.example/linked?origin=true")
    body = body.json()
    page = _open(body["url"])
    assert page.status_code == 200
    assert f'<code id="profile-key">{PROFILE_KEY}</code>' in page.text
    assert '<strong id="profile-title">Alice &lt;b&gt;Shop&lt;/b&gt;</strong>' in page.text
    assert "<li>twitter</li>" in page.text and "<script>x</script>" not in page.text
    assert '"redirect": "https://app.example/linked?origin=true"' in page.text and '"redirectOpener": true' in page.text
    expires = re.search(r'<time id="expires-at" datetime="([^"]+)"', page.text).group(1)
    assert abs(datetime.fromisoformat(expires).timestamp() - _time(body["expiresAt"])) < 1
    assert page.headers["Cache-Control"] == "no-store" and page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["X-Frame-Options"] == "DENY"

    plain = _open(create(redirect="https://app.example/linked").json()["url"]).text
    assert '"redirectOpener": false' in plain and 'id="allowed-social-default"' in plain
    assert '"redirect": null' in _open(create(redirect="javascript:alert(1)").json()["url"]).text


@pytest.mark.parametrize(
    "query",
    [
        {"session": "ayr_ls_" + "A" * 43, "domain": DOMAIN},
        {"session": "__TOKEN__", "domain": "OTHER"},
        {"session": "__TOKEN__"},
        {"session": "", "domain": DOMAIN},
    ],
)
def test_invalid_session_links_are_401_invalid_and_not_counted(emulator, create, session_call, query):
    body = create().json()
    params = {k: (_token(body["url"]) if v == "__TOKEN__" else v) for k, v in query.items()}
    page = requests.get(f"{emulator.origin}/", params=params, timeout=10)
    assert page.status_code == 401 and 'data-reason="invalid"' in page.text
    assert session_call("get", body["sessionId"]).json()["useCount"] == 0


def test_the_session_id_is_not_a_linking_token(emulator, create):
    session_id = create().json()["sessionId"]
    page = requests.get(f"{emulator.origin}/", params={"session": session_id, "domain": DOMAIN}, timeout=10)
    assert page.status_code == 401


# --- emails ---


def test_email_is_recorded_with_the_session_url(emulator, create, session_call):
    body = create(email={**EMAIL, "bcc": ["audit@app.example"]}).json()
    assert body["emailSent"] is True
    (sent,) = emulator.emails()
    assert sent == {
        **EMAIL,
        "bcc": ["audit@app.example"],
        "profileKey": PROFILE_KEY,
        "url": body["url"],
        "sentAt": sent["sentAt"],
    }
    assert abs(_time(sent["sentAt"]) - time.time()) < 10
    assert _open(sent["url"]).status_code == 200  # the user follows the link in the email
    assert session_call("get", body["sessionId"]).json()["state"] == "active"

    create(email=EMAIL)
    assert [entry["url"] for entry in emulator.emails()][0] == body["url"]  # oldest first
    assert "bcc" not in emulator.emails()[1]
    emulator.reset()
    assert emulator.emails() == []


def test_email_without_recipient_is_101(emulator, create):
    _assert_error(create(email={**EMAIL, "to": ""}), 400, 101)
    _assert_error(create(email="user@example.com"), 400, 101)
    assert emulator.emails() == []


@pytest.mark.parametrize("missing", ["contactEmail", "company", "termsUrl", "privacyUrl"])
def test_email_missing_a_sender_field_is_333_naming_it(emulator, create, missing):
    email = {k: v for k, v in EMAIL.items() if k != missing}
    message = _assert_error(create(email=email), 400, 333)["message"]
    assert message.startswith("Connect Accounts email could not be sent") and missing in message
    assert emulator.emails() == []


# --- rate limit ---


def test_creates_share_the_profiles_window_with_generate_jwt_and_reads_do_not_count(
    emulator, create, session_call, generate
):
    emulator.set_knobs(rate_limit_max=3)
    assert generate().headers["x-ratelimit-count"] == "1"
    first = create()
    assert first.status_code == 200 and first.headers["x-ratelimit-count"] == "2"
    session_id = first.json()["sessionId"]
    for _ in range(5):
        assert session_call("get", session_id).status_code == 200
    assert session_call("delete", session_id).status_code == 200
    second = create()
    assert second.status_code == 200 and second.headers["x-ratelimit-count"] == "3"

    limited = create()
    assert _assert_error(limited, 429, 429)
    assert limited.headers["x-ratelimit-max"] == "3" and limited.headers["x-ratelimit-count"] == "4"
    assert "Retry-After" not in limited.headers
    assert generate().status_code == 429
    assert session_call("get", session_id).status_code == 200  # reads are never limited
    assert create(profile_key=OTHER_PROFILE_KEY).status_code == 200
    emulator.reset()
    assert create().status_code == 200


# --- knobs: transport faults ---

ENDPOINTS = ["create", "get", "delete"]


@pytest.fixture
def call(create, session_call):
    """Call one of the three endpoints by name (GET and DELETE on a session made before the fault is armed)."""

    def _prepare():
        session_id = create().json()["sessionId"]

        def _call(endpoint: str, timeout: float = 10) -> requests.Response:
            if endpoint == "create":
                return create(timeout=timeout)
            return session_call(endpoint, session_id, timeout=timeout)

        return _call

    return _prepare


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("fault", ["429", "500", "502", "503"])
def test_status_faults(emulator, call, endpoint, fault):
    send = call()
    emulator.set_knobs(fault=fault)
    faulted = send(endpoint)
    assert faulted.status_code == int(fault)
    if fault in ("429", "500"):
        assert faulted.json()["action"] == "linkSession"
    else:
        assert faulted.headers["Content-Type"].startswith("text/html")
    assert send(endpoint).status_code == 200  # default fault_count is 1


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_malformed_and_non_json_faults(emulator, call, endpoint):
    send = call()
    emulator.set_knobs(fault="malformed")
    malformed = send(endpoint)
    assert malformed.status_code == 200 and malformed.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        malformed.json()
    emulator.set_knobs(fault="non_json")
    non_json = send(endpoint)
    assert non_json.status_code == 200 and non_json.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_drop_fault_closes_the_connection(emulator, call, endpoint):
    send = call()
    emulator.set_knobs(fault="drop")
    with pytest.raises(requests.ConnectionError):
        send(endpoint)
    assert send(endpoint).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_hang_fault_times_the_client_out(emulator, call, endpoint):
    send = call()
    emulator.set_knobs(fault="hang")
    with pytest.raises(requests.Timeout):
        send(endpoint, timeout=1)
    assert send(endpoint).status_code == 200


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_echo_fault_echoes_the_authorization_header(emulator, call, endpoint):
    send = call()
    emulator.set_knobs(fault="echo")
    echoed = send(endpoint)
    assert echoed.status_code == 400
    body = echoed.json()
    assert API_KEY in body["message"] and isinstance(body["code"], dict) and body["action"] == "linkSession"


def test_transport_faults_come_before_the_api_key_and_go_to_the_first_call(emulator, create, session_call):
    emulator.set_knobs(fault="500")
    assert create(api_key="WRONG-KEY").status_code == 500
    emulator.set_knobs(fault="503")
    session_id = "0" * 64
    assert session_call("get", session_id).status_code == 503  # consumed by the read, not the next create
    assert create().status_code == 200
    assert emulator.stats()["faults_served"] == 2


# --- knobs: token faults ---


def test_missing_url_fault_still_creates_the_session(emulator, create, session_call):
    emulator.set_knobs(fault="missing_url")
    body = create().json()
    assert body["status"] == "success" and "url" not in body
    assert session_call("get", body["sessionId"]).json()["state"] == "pending"


def test_missing_token_fault_drops_the_session_id(emulator, create):
    emulator.set_knobs(fault="missing_token")
    body = create().json()
    assert body["status"] == "success" and "sessionId" not in body
    assert _open(body["url"]).status_code == 200  # the session exists; only the answer lost its id


def test_expired_fault_answers_an_expiry_in_the_past(emulator, create, session_call):
    emulator.set_knobs(fault="expired")
    body = create().json()
    assert _time(body["expiresAt"]) == pytest.approx(time.time() - 60, abs=5)
    assert session_call("get", body["sessionId"]).json()["state"] == "expired"
    assert 'data-reason="expired"' in _open(body["url"]).text


def test_foreign_host_fault(emulator, create):
    emulator.set_knobs(fault="foreign_host")
    url = create().json()["url"]
    assert url.startswith("https://evil.example/?session=ayr_ls_") and f"domain={DOMAIN}" in url


def test_long_expiry_fault_on_both_endpoints(emulator, create, generate, registered_key):
    emulator.set_knobs(fault="long_expiry")
    body = create(expiresIn=30).json()
    assert _time(body["expiresAt"]) >= time.time() + TEN_YEARS
    assert emulator.knobs()["fault"] is None

    emulator.set_knobs(fault="long_expiry")
    token = generate(expiresIn=30).json()["token"]
    claims = jwt.decode(token, registered_key.public_key(), algorithms=["RS256"], audience=AUDIENCE, issuer=DOMAIN)
    assert claims["exp"] >= time.time() + TEN_YEARS


def test_unsigned_fault_does_not_apply_to_sessions_and_stays_armed(emulator, create, generate, registered_key):
    emulator.set_knobs(fault="unsigned")
    body = create().json()
    assert body["status"] == "success" and _open(body["url"]).status_code == 200
    assert emulator.knobs()["fault"] == "unsigned" and emulator.stats()["faults_served"] == 0
    token = generate().json()["token"]
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(token, registered_key.public_key(), algorithms=["RS256"], audience=AUDIENCE, issuer=DOMAIN)


def test_token_faults_wait_for_a_create_that_would_succeed(emulator, create, session_call):
    emulator.set_knobs(fault="missing_url")
    _assert_error(create(profile_key=None), 400, 101)
    session_id = "0" * 64
    _assert_error(session_call("get", session_id), 404)
    assert "url" not in create().json()


# --- knobs: latency ---


def test_latency_holds_every_endpoint_and_creates_are_dated_as_they_leave(emulator, create, session_call):
    emulator.set_knobs(latency_ms=800)
    sent_at, started = time.time(), time.monotonic()
    body = create().json()
    assert time.monotonic() - started >= 0.8
    assert _time(body["expiresAt"]) >= sent_at + 0.8 + 300 - 0.01
    for method in ("get", "delete"):
        started = time.monotonic()
        assert session_call(method, body["sessionId"]).status_code == 200
        assert time.monotonic() - started >= 0.8

    emulator.set_knobs(latency_ms=500)
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=40) as pool:
        statuses = list(pool.map(lambda _: create().status_code, range(40)))
    assert statuses == [200] * 40
    assert time.monotonic() - started < 5  # overlapping, not serialised (20 s)


# --- stats ---


def test_stats_count_creates_reads_and_revokes(emulator, create, session_call, generate):
    emulator.set_knobs(fault="500")
    create(redirect="https://app.example/")  # faulted: still a create that reached the handler
    create(api_key="WRONG")
    session_id = create(profile_key=OTHER_PROFILE_KEY, expiresIn=30).json()["sessionId"]
    generate()
    session_call("get", session_id)
    session_call("get", "0" * 64)
    session_call("delete", session_id)

    stats = emulator.stats()
    assert stats["generate_calls"] == 1 and stats["link_session_calls"] == 3 and emulator.calls() == 4
    assert emulator.session_stats() == {"creates": 3, "reads": 2, "revokes": 1}
    assert stats["by_profile"] == {PROFILE_KEY: 3, OTHER_PROFILE_KEY: 1}
    faulted, wrong_key, other, jwt_entry = stats["requests"]
    assert [entry["endpoint"] for entry in stats["requests"]] == ["link-sessions"] * 3 + ["generateJWT"]
    assert faulted["options"] == {"redirect": "https://app.example/"} and faulted["profileKey"] == PROFILE_KEY
    assert faulted["api_key_ok"] is True and wrong_key["api_key_ok"] is False
    assert other["options"] == {"expiresIn": 30} and abs(other["at"] - time.time()) < 10

    emulator.reset()
    stats = emulator.stats()
    assert stats["link_session_calls"] == stats["link_session_reads"] == stats["link_session_revokes"] == 0
    _assert_error(session_call("get", session_id), 404)  # reset forgets sessions


# --- in-process: what the state keeps ---


@pytest.fixture
def app(registered_key):
    config = EmulatorConfig(domain=DOMAIN, public_key=registered_key.public_key(), api_keys=(API_KEY,))
    return create_app(config)


def test_the_state_keeps_only_a_hash_of_the_url_token(app):
    client = app.test_client()
    body = client.post(
        "/api/profiles/link-sessions", json={}, headers={"Authorization": f"Bearer {API_KEY}", "Profile-Key": "p"}
    ).json
    token = _token(body["url"])
    state = app.config["EMULATOR_STATE"]
    kept = repr(vars(state))
    assert token not in kept and API_KEY not in kept and token_fingerprint(token) in kept
    page = client.get(body["url"].removeprefix("http://localhost"))
    assert page.status_code == 200 and b'id="profile-key">p<' in page.data


def test_remembered_sessions_are_bounded(app, monkeypatch):
    monkeypatch.setattr("emulator.state.MAX_REMEMBERED_SESSIONS", 3)
    client = app.test_client()
    headers = {"Authorization": f"Bearer {API_KEY}", "Profile-Key": "p"}
    made = [client.post("/api/profiles/link-sessions", json={}, headers=headers).json for _ in range(4)]
    oldest, *kept = (entry["sessionId"] for entry in made)
    assert client.get(f"/api/profiles/link-sessions/{oldest}", headers=headers).status_code == 404
    assert all(client.get(f"/api/profiles/link-sessions/{i}", headers=headers).status_code == 200 for i in kept)
    assert client.get(made[0]["url"].removeprefix("http://localhost")).status_code == 401  # its URL is gone too
