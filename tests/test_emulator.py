"""The Ayrshare emulator over real HTTP: vendor-documented behaviour first, then the fault knobs."""

from __future__ import annotations

import base64
import re
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.emulator_proc import EmulatorProcess

DOMAIN = "ACME"
API_KEY = "API-KEY-PRIMARY"
SECOND_API_KEY = "API-KEY-ROTATED"
PROFILE_KEY = "PROFILE-KEY-1"
OTHER_PROFILE_KEY = "PROFILE-KEY-2"
# Markup in a title proves the linking page escapes what it shows.
PROFILES = {PROFILE_KEY: "Alice <b>Shop</b>", OTHER_PROFILE_KEY: "Bob"}
AUDIENCE = "https://app.ayrshare.com"


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="module")
def registered_key() -> rsa.RSAPrivateKey:
    return _new_key()


@pytest.fixture(scope="module")
def private_pem(registered_key) -> str:
    return _pem(registered_key)


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
def generate(emulator, private_pem):
    """POST generateJWT with a valid body, overridable per test."""

    def _generate(api_key: str | None = API_KEY, headers: dict | None = None, timeout: float = 10, **fields):
        body = {"domain": DOMAIN, "privateKey": private_pem, "profileKey": PROFILE_KEY, **fields}
        body = {k: v for k, v in body.items() if v is not None}
        all_headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        all_headers.update(headers or {})
        return requests.post(
            f"{emulator.base_url}/profiles/generateJWT", json=body, headers=all_headers, timeout=timeout
        )

    return _generate


def _claims(token: str, key: rsa.RSAPrivateKey) -> dict:
    return jwt.decode(token, key.public_key(), algorithms=["RS256"], audience=AUDIENCE, issuer=DOMAIN)


def _assert_error(response: requests.Response, status: int, code: int | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["action"] == "JWT" and body["status"] == "error" and isinstance(body["message"], str)
    if code is not None:
        assert body["code"] == code
    return body


# --- generateJWT: success ---


def test_success_returns_signed_token_and_link_to_emulator(emulator, generate, registered_key):
    response = generate()
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "success" and body["title"] == PROFILES[PROFILE_KEY]
    assert "expiresIn" not in body and "emailSent" not in body

    claims = _claims(body["token"], registered_key)
    assert claims["apiKey"] == API_KEY and claims["profileKey"] == PROFILE_KEY
    assert claims["exp"] - claims["iat"] == 300  # documented default: 5 minutes
    assert abs(claims["iat"] - time.time()) < 5 and claims["sub"]

    url = urlsplit(body["url"])
    assert f"{url.scheme}://{url.netloc}" == emulator.origin
    assert parse_qs(url.query) == {"domain": [DOMAIN], "jwt": [body["token"]]}
    assert response.headers["x-ratelimit-max"] == "300" and response.headers["x-ratelimit-count"] == "1"
    assert "Retry-After" not in response.headers


def test_any_configured_api_key_is_accepted_and_lands_in_the_token(generate, registered_key):
    response = generate(api_key=SECOND_API_KEY)
    assert response.status_code == 200
    assert _claims(response.json()["token"], registered_key)["apiKey"] == SECOND_API_KEY


def test_expires_in_sets_lifetime_and_is_echoed(generate, registered_key):
    body = generate(expiresIn=30).json()
    assert body["expiresIn"] == "30m"
    claims = _claims(body["token"], registered_key)
    assert claims["exp"] - claims["iat"] == 1800


@pytest.mark.parametrize("value", [0, 2881, -5, "30", True, [5]])
def test_expires_in_out_of_range_or_not_a_number_is_refused(generate, value):
    _assert_error(generate(expiresIn=value), 400)


def test_base64_private_key_is_accepted(generate, private_pem, registered_key):
    encoded = base64.b64encode(private_pem.encode()).decode()
    response = generate(privateKey=encoded, base64=True)
    assert response.status_code == 200
    _claims(response.json()["token"], registered_key)


def test_crlf_line_endings_are_accepted(generate, private_pem):
    assert generate(privateKey=private_pem.replace("\n", "\r\n")).status_code == 200


EMAIL = {
    "to": "user@example.com",
    "contactEmail": "support@app.example",
    "company": "App Inc.",
    "termsUrl": "https://app.example/terms",
    "privacyUrl": "https://app.example/privacy",
}


def test_email_is_recorded_with_the_jwt_url_and_reports_email_sent(emulator, generate):
    body = generate(email=EMAIL).json()
    assert body["emailSent"] is True
    (sent,) = emulator.emails()
    assert sent == {**EMAIL, "profileKey": PROFILE_KEY, "url": body["url"], "sentAt": sent["sentAt"]}
    assert requests.get(sent["url"], timeout=10).status_code == 200
    emulator.reset()
    assert emulator.emails() == []


def test_email_without_recipient_is_101_and_without_a_sender_field_is_333(emulator, generate):
    _assert_error(generate(email={"company": "no recipient"}), 400, 101)
    assert "termsUrl" in _assert_error(generate(email={**EMAIL, "termsUrl": ""}), 400, 333)["message"]
    assert emulator.emails() == []


# --- generateJWT: documented errors ---


@pytest.mark.parametrize("api_key", ["WRONG-KEY", None])
def test_invalid_or_missing_api_key_is_403_code_102(generate, api_key):
    response = _assert_error(generate(api_key=api_key), 403, 102)
    assert "API Key not valid" in response["message"]


@pytest.mark.parametrize("missing", ["domain", "privateKey", "profileKey"])
def test_missing_required_field_is_400(emulator, private_pem, missing):
    body = {"domain": DOMAIN, "privateKey": private_pem, "profileKey": PROFILE_KEY}
    del body[missing]
    response = requests.post(
        f"{emulator.base_url}/profiles/generateJWT",
        json=body,
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert missing in _assert_error(response, 400, 101)["message"]


def test_unregistered_domain_is_400(generate):
    _assert_error(generate(domain="acme"), 400)  # exact match: the docs ask for the exact domain


def test_api_key_as_profile_key_is_400(generate):
    assert "API Key cannot be used" in _assert_error(generate(profileKey=API_KEY), 400)["message"]


def test_unknown_profile_key_is_400_when_profiles_are_configured(generate):
    _assert_error(generate(profileKey="NOT-A-PROFILE"), 400)


@pytest.mark.parametrize(
    "mangle",
    [
        lambda pem: "not a key",
        lambda pem: pem.replace("\n", " "),  # newlines lost when pasted into code: the vendor's pitfall
        lambda pem: base64.b64encode(pem.encode()).decode(),  # base64 without `base64: true`
        lambda pem: "    " + pem,  # indented in a template literal: OpenSSL never finds the BEGIN line
        lambda pem: pem.replace("\n", "\n\t"),  # extra tabs, which the vendor says break parsing
    ],
)
def test_unparseable_private_key_is_400_code_189(generate, private_pem, mangle):
    body = _assert_error(generate(privateKey=mangle(private_pem)), 400, 189)
    assert "PEM routines" in body["message"] and "no start line" in body["message"]


def test_wrong_key_without_verify_still_yields_a_url_that_fails_on_the_page(generate):
    response = generate(privateKey=_pem(_new_key()))
    assert response.status_code == 200
    page = requests.get(response.json()["url"], timeout=10)
    assert page.status_code == 401 and "invalid" in page.text


def test_wrong_key_with_verify_is_an_error(generate):
    _assert_error(generate(privateKey=_pem(_new_key()), verify=True), 400)
    assert generate(verify=True).status_code == 200  # the registered key passes verification


@pytest.mark.parametrize(
    ("headers", "fields", "code"),
    [
        ({"X-Twitter-OAuth1-Api-Key": "ck"}, {}, 188),
        ({}, {"twitterApiSecret": "cs"}, 188),
        (
            {"X-Twitter-OAuth1-Api-Key": "ck", "X-Twitter-OAuth1-Api-Secret": "cs"},
            {"twitterApiKey": "ck"},
            434,
        ),
    ],
)
def test_twitter_credential_errors(generate, headers, fields, code):
    _assert_error(generate(headers=headers, **fields), 400, code)


def test_twitter_credentials_in_headers_are_accepted_and_recorded(emulator, generate):
    headers = {"X-Twitter-OAuth1-Api-Key": "ck", "X-Twitter-OAuth1-Api-Secret": "cs"}
    assert generate(headers=headers).status_code == 200
    assert generate(twitterApiKey="ck", twitterApiSecret="cs").status_code == 200
    first, second = emulator.stats()["requests"]
    assert first["twitter_headers"] is True and second["twitter_headers"] is False


# --- rate limit ---


def test_rate_limit_is_per_profile_and_has_no_retry_after(emulator, generate):
    emulator.set_knobs(rate_limit_max=2)
    assert [generate().status_code for _ in range(2)] == [200, 200]
    limited = generate()
    _assert_error(limited, 429)
    assert limited.headers["x-ratelimit-max"] == "2" and limited.headers["x-ratelimit-count"] == "3"
    assert "Retry-After" not in limited.headers
    assert generate(profileKey=OTHER_PROFILE_KEY).status_code == 200
    emulator.reset()
    assert generate().status_code == 200  # reset clears the windows


# --- linking page ---


def test_linking_page_shows_profile_escaped_with_protective_headers(generate):
    body = generate(allowedSocial=["twitter", "<script>x</script>"]).json()
    page = requests.get(body["url"], timeout=10)
    assert page.status_code == 200
    assert f'<code id="profile-key">{PROFILE_KEY}</code>' in page.text
    assert '<strong id="profile-title">Alice &lt;b&gt;Shop&lt;/b&gt;</strong>' in page.text
    assert "<li>twitter</li>" in page.text and "&lt;script&gt;x&lt;/script&gt;" in page.text
    assert "<script>x</script>" not in page.text
    assert 'id="done"' in page.text
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    assert page.headers["X-Frame-Options"] == "DENY"


def test_redirect_stays_out_of_the_url_and_origin_true_targets_the_opener(generate):
    redirect = "https://app.example/linked?origin=true"
    body = generate(redirect=redirect).json()
    assert "app.example" not in body["url"]
    page = requests.get(body["url"], timeout=10).text
    assert '"redirect": "https://app.example/linked?origin=true"' in page
    assert '"redirectOpener": true' in page

    plain = requests.get(generate(redirect="https://app.example/linked").json()["url"], timeout=10).text
    assert '"redirectOpener": false' in plain


def test_non_web_redirect_is_never_navigated_to(generate):
    page = requests.get(generate(redirect="javascript:alert(1)").json()["url"], timeout=10).text
    assert "javascript:" not in page and '"redirect": null' in page


def test_expired_link_is_401_expired(emulator, generate):
    emulator.set_knobs(token_lifetime_seconds=1)
    url = generate().json()["url"]
    time.sleep(2.1)
    page = requests.get(url, timeout=10)
    assert page.status_code == 401
    assert 'id="link-error"' in page.text and "expired" in page.text


@pytest.mark.parametrize(
    "query",
    [
        {"domain": DOMAIN, "jwt": "not.a.jwt"},
        {"domain": "OTHER", "jwt": "__TOKEN__"},
        {"domain": DOMAIN},
    ],
)
def test_invalid_links_are_401_invalid(emulator, generate, query):
    token = generate().json()["token"]
    params = {k: (token if v == "__TOKEN__" else v) for k, v in query.items()}
    page = requests.get(f"{emulator.origin}/", params=params, timeout=10)
    assert page.status_code == 401 and 'id="link-error"' in page.text and "invalid" in page.text
    assert page.headers["Cache-Control"] == "no-store"


# --- knobs: faults ---


@pytest.mark.parametrize("fault", ["429", "500", "502", "503"])
def test_status_faults(emulator, generate, fault):
    emulator.set_knobs(fault=fault)
    assert generate().status_code == int(fault)
    assert generate().status_code == 200  # default fault_count is 1


def test_malformed_and_non_json_faults(emulator, generate):
    emulator.set_knobs(fault="malformed")
    malformed = generate()
    assert malformed.status_code == 200 and malformed.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        malformed.json()
    emulator.set_knobs(fault="non_json")
    non_json = generate()
    assert non_json.status_code == 200 and non_json.headers["Content-Type"].startswith("text/html")


@pytest.mark.parametrize("missing", ["url", "token"])
def test_missing_field_faults(emulator, generate, missing):
    emulator.set_knobs(fault=f"missing_{missing}")
    body = generate().json()
    assert body["status"] == "success" and missing not in body


def test_unsigned_fault_token_fails_verification(emulator, generate, registered_key):
    emulator.set_knobs(fault="unsigned")
    body = generate().json()
    with pytest.raises(jwt.InvalidSignatureError):
        _claims(body["token"], registered_key)
    assert requests.get(body["url"], timeout=10).status_code == 401


def test_expired_fault_token_is_already_expired(emulator, generate, registered_key):
    emulator.set_knobs(fault="expired")
    body = generate().json()
    with pytest.raises(jwt.ExpiredSignatureError):
        _claims(body["token"], registered_key)
    assert "expired" in requests.get(body["url"], timeout=10).text


def test_foreign_host_fault(emulator, generate):
    emulator.set_knobs(fault="foreign_host")
    assert generate().json()["url"].startswith("https://evil.example/")


def test_long_expiry_fault_mints_a_token_valid_for_ten_years(emulator, generate, registered_key):
    emulator.set_knobs(fault="long_expiry")
    claims = _claims(generate(expiresIn=30).json()["token"], registered_key)
    assert claims["exp"] - claims["iat"] >= 10 * 365 * 24 * 3600
    assert emulator.knobs()["fault"] is None  # consumed


def test_drop_fault_closes_connection(emulator, generate):
    emulator.set_knobs(fault="drop")
    with pytest.raises(requests.ConnectionError):
        generate()
    assert generate().status_code == 200


def test_hang_fault_times_the_client_out(emulator, generate):
    emulator.set_knobs(fault="hang")
    with pytest.raises(requests.Timeout):
        generate(timeout=1)
    assert generate().status_code == 200  # other requests are served meanwhile


def test_fault_count_and_unlimited_faults(emulator, generate):
    emulator.set_knobs(fault="503", fault_count=2)
    assert [generate().status_code for _ in range(3)] == [503, 503, 200]
    emulator.set_knobs(fault="500", fault_count=-1)
    assert [generate().status_code for _ in range(4)] == [500] * 4
    assert emulator.set_knobs(fault=None)["fault"] is None
    assert generate().status_code == 200
    assert emulator.stats()["faults_served"] == 6


def test_token_faults_do_not_fire_on_invalid_requests(emulator, generate):
    emulator.set_knobs(fault="missing_url")
    _assert_error(generate(domain="OTHER"), 400)
    assert "url" not in generate().json()  # the fault waited for a request that would succeed


@pytest.mark.parametrize(
    "knobs",
    [{"nope": 1}, {"fault": "teapot"}, {"latency_ms": -1}, {"fault_count": -2}, {"rate_limit_max": 0}],
)
def test_invalid_knobs_are_rejected(emulator, knobs):
    response = requests.post(f"{emulator.origin}/_emulator/knobs", json=knobs, timeout=10)
    assert response.status_code == 400
    assert emulator.knobs()["fault"] is None


# --- knobs: latency and concurrency ---


def test_latency_applies_and_concurrent_slow_calls_overlap(emulator, generate):
    emulator.set_knobs(latency_ms=1500)
    sent_at, started = time.time(), time.monotonic()
    response = generate()
    assert response.status_code == 200
    assert time.monotonic() - started >= 1.5
    # The token is minted as of the answer, not the arrival: a latency shifts iat/exp as a slow API would.
    claims = jwt.decode(response.json()["token"], options={"verify_signature": False})
    assert claims["iat"] >= int(sent_at + 1.5)

    emulator.set_knobs(latency_ms=500)

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(lambda _: generate().status_code, range(60)))
    elapsed = time.monotonic() - started
    assert statuses == [200] * 60
    # Serialised, 60 calls would take 30 s; overlapping they take about one latency.
    assert elapsed < 5, elapsed


# --- stats and reset ---


def test_stats_count_calls_and_record_requests_without_secrets(emulator, generate, private_pem):
    emulator.set_knobs(fault="500")
    generate(redirect="https://app.example/")
    generate(api_key="WRONG")
    generate(privateKey=_pem(_new_key()), profileKey=OTHER_PROFILE_KEY)

    stats = emulator.stats()
    assert stats["generate_calls"] == 3 and emulator.calls() == 3
    assert stats["by_profile"] == {PROFILE_KEY: 2, OTHER_PROFILE_KEY: 1}
    assert stats["faults_served"] == 1
    faulted, wrong_api_key, wrong_private_key = stats["requests"]
    assert {entry["endpoint"] for entry in stats["requests"]} == {"generateJWT"}
    assert faulted["options"] == {"redirect": "https://app.example/"}
    assert faulted["private_key_matches"] is True and faulted["api_key_ok"] is True
    assert wrong_api_key["api_key_ok"] is False
    assert wrong_private_key["private_key_matches"] is False
    assert all(private_pem not in str(entry) for entry in stats["requests"])
    assert abs(faulted["at"] - time.time()) < 10

    emulator.reset()
    assert emulator.stats() == {
        "generate_calls": 0,
        "generate_connections": 0,
        "link_session_calls": 0,
        "link_session_connections": 0,
        "link_session_reads": 0,
        "link_session_revokes": 0,
        "profile_creates": 0,
        "profile_deletes": 0,
        "user_reads": 0,
        "social_unlinks": 0,
        "by_profile": {},
        "faults_served": 0,
        "requests": [],
        "webhook_registers": 0,
        "webhook_unregisters": 0,
        "webhook_lists": 0,
        "webhook_secret_rotations": 0,
        "webhook_events": 0,
        "webhook_attempts": 0,
        "webhook_failed_attempts": 0,
        "webhook_faults_served": 0,
    }


def test_connections_stay_open_between_calls_as_a_hosted_api_keeps_them(emulator, private_pem):
    """A client's pooled connection serves call after call (werkzeug's server, used until 2026-11-27, closed each)."""
    body = {"domain": DOMAIN, "privateKey": private_pem, "profileKey": PROFILE_KEY}
    with requests.Session() as session:
        for _ in range(3):
            response = session.post(
                f"{emulator.base_url}/profiles/generateJWT",
                json=body,
                headers={"Authorization": f"Bearer {API_KEY}"},
                timeout=10,
            )
            assert response.status_code == 200
            assert response.headers.get("Connection", "").lower() != "close"
    stats = emulator.stats()
    assert stats["generate_calls"] == 3 and stats["generate_connections"] == 1


def test_request_log_keeps_the_last_50(emulator, generate):
    for _ in range(55):
        generate(api_key="WRONG")
    stats = emulator.stats()
    assert stats["generate_calls"] == 55 and len(stats["requests"]) == 50


def test_health(emulator):
    assert requests.get(f"{emulator.origin}/_emulator/health", timeout=10).json() == {"ok": True}


def test_linking_page_is_a_styled_product_page_labelled_as_the_emulator(generate):
    page = requests.get(generate().json()["url"], timeout=10)
    policy = page.headers["Content-Security-Policy"]
    nonce = re.search(r"style-src 'nonce-([^']+)'", policy).group(1)
    assert f'<style nonce="{nonce}">' in page.text  # the inline stylesheet is the one the policy allows
    assert "img-src data:" in policy and '<link rel="icon" href="data:image/svg+xml,' in page.text  # no /favicon.ico
    assert "unsafe" not in policy and " style=" not in page.text
    assert "Emulator: a test double, not the real Ayrshare" in page.text
    assert '<span class="network-name">LinkedIn</span>' in page.text
    expired = requests.get(f"{generate().json()['url']}x", timeout=10)
    assert expired.status_code == 401 and "not the real Ayrshare" in expired.text
