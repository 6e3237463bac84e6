"""No secret, JWT or linking URL ever reaches a log line or an error body.

Starts the real service under gunicorn with every secret set to a recognisable value (API key, private key, signing
secret, internal token, JWT secret, cache and data encryption keys, webhook secret), drives every error path — each
kind of auth failure, bad input, an unknown user, a created and a refused profile key, forged and real webhooks,
every upstream fault the emulator can inject, our own rate limit, and a Redis outage — and then searches the whole
captured stdout/stderr and every error body for any of them.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
import requests
from cryptography.fernet import Fernet

from service.auth import sign, signed_path
from tests.conftest import API_KEY, DATA_KEY, INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.processes import RedisServer

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

JWT_SECRET = "JWT-HS-SECRET-LEAKCHECK-4f9a2c7e1b3d5f7a9c1e"
WEBHOOK_SECRET = "WEBHOOK-SECRET-LEAKCHECK-8d2f6a"
CACHE_KEY = Fernet.generate_key().decode()
ISSUER, AUDIENCE = "https://id.example.com/", "connect"
JWT_SHAPE = re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}")
UPSTREAM_FAULTS = ["429", "500", "malformed", "non_json", "missing_url", "expired", "foreign_host", "long_expiry"]
JWT_ONLY_FAULTS = ["unsigned"]  # a session answer carries no token to sign
JSON = {"Accept": "application/json"}


def session_token(user: str, secret: str = JWT_SECRET) -> str:
    now = int(time.time())
    return jwt.encode({"sub": user, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}, secret, algorithm="HS256")


@pytest.fixture
def leak_redis():
    server = RedisServer().start()
    yield server
    server.stop()


def test_no_secret_jwt_or_linking_url_in_any_log_line_or_error_body(
    start_service, emulator, keypair, leak_redis, link_flow
):
    service = start_service(
        workers=2,
        REDIS_URL=leak_redis.url,
        CONNECT_AUTH="signed,jwt,header",
        JWT_HS256_SECRET=JWT_SECRET,
        JWT_ISSUER=ISSUER,
        JWT_AUDIENCE=AUDIENCE,
        JWT_COOKIE="session",
        TRUSTED_PROXIES="10.9.9.0/24",
        CACHE_ENCRYPTION_KEY=CACHE_KEY,
        REDIRECT_ALLOWED_HOSTS="app.example.com",
        RATE_LIMIT_PER_USER="3/minute",
        CIRCUIT_FAILURE_THRESHOLD="1000",  # this test walks every upstream fault in turn; the breaker has its own
        LOG_LEVEL="DEBUG",
        AYRSHARE_WEBHOOK_SECRET=WEBHOOK_SECRET,
    )
    base = service.url
    error_bodies: list[str] = []
    linking_urls: list[str] = []

    def call(path: str, expect: int, headers=None, **kwargs) -> requests.Response:
        response = requests.get(
            base + path, headers={**JSON, **(headers or {})}, allow_redirects=False, timeout=30, **kwargs
        )
        assert response.status_code == expect, (path, response.status_code, response.text)
        if response.status_code >= 400:
            error_bodies.append(response.text)
        else:
            linking_urls.append(response.json()["url"])
        return response

    # A link that works, so there is a linking URL and a JWT that could leak.
    call(signed_path("alice", SIGNING_SECRET), 200)
    call(signed_path("alice", SIGNING_SECRET), 200)  # cache hit (encrypted entry)

    # The internal API's answers and refusals (status, revoke) carry nothing secret either.
    for method, path in (
        ("get", "/internal/v1/users/alice/link-session"),
        ("delete", "/internal/v1/users/alice/links"),
    ):
        for token, expect in ((API_KEY, 401), (INTERNAL_TOKEN, {"session": 200, "jwt": 404}[link_flow])):
            headers = {**JSON, "Authorization": f"Bearer {token}"}
            response = requests.request(method, base + path, headers=headers, timeout=30)
            assert response.status_code == (200 if method == "delete" and expect == 404 else expect), path
            error_bodies.append(response.text)

    # The directory: a profile created, linked, listed, attached, refused; the key must never be echoed.
    internal_json = {**JSON, "Authorization": f"Bearer {INTERNAL_TOKEN}"}
    newcomer = f"newcomer-{link_flow}-{int(time.time() * 1000)}"  # the suite's shared directory outlives this test
    created = requests.post(f"{base}/internal/v1/users/{newcomer}/profile", headers=internal_json, timeout=30).json()
    call(signed_path(newcomer, SIGNING_SECRET), 200)
    profile_keys = [created["profileKey"], "PKLEAK-" + API_KEY[:12]]
    for body, expect in (
        ({"profileKey": profile_keys[1]}, 422),  # Ayrshare refuses it
        ({"profileKey": profile_keys[1], "extra": SIGNING_SECRET}, 400),
        ({"profileKey": f"{profile_keys[1]} {API_KEY}"}, 400),
    ):
        response = requests.put(base + "/internal/v1/users/leaky", json=body, headers=internal_json, timeout=30)
        assert response.status_code == expect, (sorted(body), response.text)
        error_bodies.append(response.text)
    listed = requests.get(base + "/internal/v1/users", headers=internal_json, timeout=30)
    assert profile_keys[0] not in listed.text

    # Webhooks: refused (bad signature echoing secrets) and accepted; neither body nor log shows the secret.
    event = json.dumps({"action": "social", "type": "link", "platform": "x", "refId": created["refId"]}).encode()
    good = hmac.new(WEBHOOK_SECRET.encode(), event, hashlib.sha256).hexdigest()
    for signature, expect in ((good[::-1], 401), (WEBHOOK_SECRET, 401), (good, 200)):
        headers = {"X-Authorization-Timestamp": str(int(time.time())), "X-Authorization-Content-SHA256": signature}
        response = requests.post(base + "/webhooks/ayrshare", data=event, headers=headers, timeout=30)
        assert response.status_code == expect, response.text
        error_bodies.append(response.text)
    webhook_signatures = [good]

    # Authentication failures, each carrying something secret-shaped the service must not echo.
    now = int(time.time())
    call("/connect/alice", 401)
    call(f"/connect/alice?expires={now + 60}&signature={sign('alice', now + 60, 'x' * 40)}", 403)
    call(f"/connect/alice?expires={now - 60}&signature={sign('alice', now - 60, SIGNING_SECRET)}", 403)
    call(signed_path("bob", SIGNING_SECRET).replace("/bob", "/alice"), 403)
    call(f"/connect/alice?expires={now + 60}&signature={SIGNING_SECRET}", 403)
    call("/connect/alice", 401, headers={"Authorization": f"Bearer {INTERNAL_TOKEN}x"})
    call("/connect/alice", 401, headers={"Authorization": f"Bearer {API_KEY}"})
    call("/connect/alice", 401, headers={"Authorization": f"Bearer {session_token('alice', 'w' * 40)}"})
    call("/connect/alice", 403, headers={"Authorization": f"Bearer {session_token('bob')}"})
    call("/connect/alice", 401, cookies={"session": session_token("alice", JWT_SECRET + "x")})
    call("/connect/alice", 401, headers={"X-Forwarded-User": "alice"})  # not from a trusted proxy

    # Bad input (with secrets and a real linking URL stuffed into it) and an unknown user.
    internal = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    call("/connect/" + "x" * 200, 400, headers=internal)
    call("/connect/alice", 400, headers=internal, params={"redirect": f"https://evil.com/{API_KEY}"})
    call("/connect/alice", 400, headers=internal, params={"redirect": linking_urls[0]})
    call("/connect/alice", 400, headers=internal, params={"allowedSocial": f"facebook,{SIGNING_SECRET}"})
    call("/connect/nobody", 404, headers=internal)

    # Every upstream fault, each on a user with nothing cached.
    for number, fault in enumerate(UPSTREAM_FAULTS + (JWT_ONLY_FAULTS if link_flow == "jwt" else [])):
        emulator.set_knobs(fault=fault, fault_count=-1)
        expected = 503 if fault in ("429", "500") else 502
        call(f"/connect/user{number}", expected, headers=internal)
    emulator.set_knobs(fault=None)

    # Our own rate limit (3 per minute per user in each of the 2 workers; alice already has 2 of the 6).
    statuses = []
    while 429 not in statuses and len(statuses) < 5:
        response = requests.get(base + "/connect/alice", headers={**JSON, **internal}, timeout=30)
        statuses.append(response.status_code)
        (error_bodies if response.status_code >= 400 else linking_urls).append(
            response.text if response.status_code >= 400 else response.json()["url"]
        )
    assert set(statuses) == {200, 429}, statuses

    # Redis dies: the service keeps answering from Ayrshare, readiness reports it, logs say so.
    leak_redis.kill()
    call("/connect/bob", 200, headers=internal)
    call("/connect/user20", 200, headers=internal)
    ready = requests.get(base + "/readyz", timeout=10)
    assert ready.status_code == 503
    error_bodies.append(ready.text)

    service.stop()
    log = service.log()
    assert '"level":"warning"' in log and "redis" in log.lower()  # the outage was logged, so the log is real

    secrets = [API_KEY, SIGNING_SECRET, INTERNAL_TOKEN, JWT_SECRET, CACHE_KEY, leak_redis.url, WEBHOOK_SECRET]
    secrets += profile_keys + webhook_signatures + [DATA_KEY]
    pem_lines = [line for line in keypair["private_pem"].splitlines() if line and not line.startswith("-----")]
    assert len(pem_lines) > 10
    tokens = [parse_qs(urlsplit(url).query)[link_flow][0] for url in linking_urls]  # the jwt or ayr_ls_ token
    for text, where in [(log, "log")] + [(body, "error body") for body in error_bodies]:
        for secret in secrets + pem_lines + linking_urls + tokens:
            assert secret not in text, f"a secret reached the {where}"
        assert JWT_SHAPE.search(text) is None, f"a JWT reached the {where}"
        assert "jwt=" not in text and "ayr_ls_" not in text, f"a linking URL reached the {where}"
