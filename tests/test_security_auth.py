"""Caller identity beyond signed links: session JWTs (`CONNECT_AUTH=jwt`), a trusted auth proxy (`header`), and several
modes at once. Each hostile credential is refused on its own, and every refusal over HTTP costs no Ayrshare call."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from service import ConfigError, create_app
from service.auth import signed_path
from service.auth.session_jwt import JwksCache, SessionTokenVerifier
from service.errors import Unauthenticated
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.processes import wait_until

HS_SECRET = "JWT-HS-SECRET-e4c1b0a9f8d7e6c5b4a3f2e1d0c9b8a7"
ISSUER, AUDIENCE = "https://id.example.com/", "connect-service"
JSON = {"Accept": "application/json"}


def claims(**overrides):
    now = int(time.time())
    base = {"sub": "alice", "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300, "iat": now, "nbf": now - 5}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs_token(secret=HS_SECRET, headers=None, **overrides):
    return jwt.encode(claims(**overrides), secret, algorithm="HS256", headers=headers)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, payload: dict, key: bytes = b"") -> str:
    """A token built by hand, as an attacker would (PyJWT refuses to make some of these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


@pytest.fixture(scope="module")
def rsa_keys():
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def public_pem(key) -> str:
    from cryptography.hazmat.primitives import serialization

    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def hs_verifier(**kwargs) -> SessionTokenVerifier:
    return SessionTokenVerifier(algorithms=("HS256",), issuer=ISSUER, audience=AUDIENCE, hs_secret=HS_SECRET, **kwargs)


# -- the verifier on its own ----------------------------------------------------------------------------------------
def test_a_valid_session_token_names_its_user():
    assert hs_verifier().user_of(hs_token()) == "alice"


def test_a_configurable_claim_names_the_user():
    assert hs_verifier(user_claim="email").user_of(hs_token(email="a@example.com")) == "a@example.com"


def test_audience_lists_and_small_clock_skew_are_accepted():
    verifier = hs_verifier(leeway=30)
    assert verifier.user_of(hs_token(aud=["other", AUDIENCE], exp=int(time.time()) - 10)) == "alice"


def _hostile_hs_tokens():
    now = int(time.time())
    good = hs_token()
    head, body, sig = good.split(".")
    return [
        ("alg none", forged({"alg": "none", "typ": "JWT"}, claims())),
        ("alg None capitalised", forged({"alg": "None", "typ": "JWT"}, claims())),
        ("alg not pinned (HS512)", jwt.encode(claims(), HS_SECRET * 2, algorithm="HS512")),
        ("signed with another secret", hs_token(secret="another-secret-of-the-right-length-0123456789")),
        ("payload swapped after signing", f"{head}.{b64(json.dumps(claims(sub='bob')).encode())}.{sig}"),
        ("signature stripped", f"{head}.{body}."),
        ("expired beyond leeway", hs_token(exp=now - 120)),
        ("not yet valid", hs_token(nbf=now + 600)),
        ("wrong issuer", hs_token(iss="https://evil.example.com/")),
        ("issuer missing", hs_token(iss=None)),
        ("wrong audience", hs_token(aud="another-service")),
        ("audience missing", hs_token(aud=None)),
        ("expiry missing", hs_token(exp=None)),
        ("user claim missing", hs_token(sub=None)),
        ("user claim not a string", hs_token(sub=["alice"])),
        ("user claim empty", hs_token(sub="")),
        ("expiry not a number", forged({"alg": "HS256"}, claims(exp="tomorrow"), HS_SECRET.encode())),
        ("garbage", "not-a-jwt"),
        ("four segments", good + ".extra"),
        ("header not JSON", f"{b64(b'nope')}.{body}.{sig}"),
        ("header is a list", f"{b64(b'[1]')}.{body}.{sig}"),
        ("oversized", hs_token(pad="x" * 9000)),
    ]


HOSTILE_HS = _hostile_hs_tokens()


@pytest.mark.parametrize(("case", "token"), HOSTILE_HS, ids=[c[0] for c in HOSTILE_HS])
def test_hostile_session_tokens_are_refused(case, token):
    with pytest.raises(Unauthenticated):
        hs_verifier().user_of(token)


def test_algorithm_confusion_public_key_as_hmac_secret_is_refused(rsa_keys):
    pem = public_pem(rsa_keys[0])
    verifier = SessionTokenVerifier(algorithms=("RS256",), issuer=ISSUER, audience=AUDIENCE, public_key_pem=pem)
    assert verifier.user_of(jwt.encode(claims(), rsa_keys[0], algorithm="RS256")) == "alice"
    confused = forged({"alg": "HS256", "typ": "JWT"}, claims(), pem.encode())
    with pytest.raises(Unauthenticated):
        verifier.user_of(confused)
    with pytest.raises(Unauthenticated):  # right algorithm, someone else's key
        verifier.user_of(jwt.encode(claims(), rsa_keys[1], algorithm="RS256"))


def test_verifier_refuses_alg_none_and_ambiguous_key_sources():
    with pytest.raises(ValueError):
        SessionTokenVerifier(algorithms=("none",), issuer=ISSUER, audience=AUDIENCE, hs_secret=HS_SECRET)
    with pytest.raises(ValueError):
        SessionTokenVerifier(algorithms=("HS256",), issuer=ISSUER, audience=AUDIENCE)


# -- JWKS: cached, refreshed on an unknown kid, throttled ----------------------------------------------------------
class JwksServer:
    """A real HTTP server on a free loopback port serving a JWKS the test can change."""

    def __init__(self):
        self.keys: list[dict] = []
        self.hits = 0
        self.hold: threading.Event | None = None  # set to an Event to keep answers back until it is set
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's naming
                server.hits += 1
                if server.hold is not None:
                    server.hold.wait(timeout=10)
                body = json.dumps({"keys": server.keys}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, key, kid, alg=None):
        entry = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
        entry.update({"kid": kid, "use": "sig"})
        if alg:
            entry["alg"] = alg
        self.keys.append(entry)


@pytest.fixture
def jwks_server():
    server = JwksServer()
    yield server
    server.httpd.shutdown()


def jwks_verifier(url, min_refresh=0.0):
    return SessionTokenVerifier(
        algorithms=("RS256",), issuer=ISSUER, audience=AUDIENCE, jwks=JwksCache(url, min_refresh=min_refresh)
    )


def rs_token(key, kid, alg="RS256", **overrides):
    return jwt.encode(claims(**overrides), key, algorithm=alg, headers={"kid": kid})


def test_jwks_keys_are_cached_and_refreshed_when_a_new_kid_appears(jwks_server, rsa_keys):
    jwks_server.publish(rsa_keys[0], "k1")
    verifier = jwks_verifier(jwks_server.url)
    assert verifier.user_of(rs_token(rsa_keys[0], "k1")) == "alice"
    assert verifier.user_of(rs_token(rsa_keys[0], "k1", sub="bob")) == "bob"
    assert jwks_server.hits == 1  # cached

    jwks_server.publish(rsa_keys[1], "k2")  # the identity provider rotates
    assert verifier.user_of(rs_token(rsa_keys[1], "k2")) == "alice"
    assert jwks_server.hits == 2


def test_unknown_kids_cannot_make_us_hammer_the_identity_provider(jwks_server, rsa_keys):
    jwks_server.publish(rsa_keys[0], "k1")
    verifier = jwks_verifier(jwks_server.url, min_refresh=30)
    assert verifier.user_of(rs_token(rsa_keys[0], "k1")) == "alice"
    for attempt in range(20):
        with pytest.raises(Unauthenticated):
            verifier.user_of(rs_token(rsa_keys[1], f"random-{attempt}"))
    assert jwks_server.hits == 1


def _in_thread(func) -> tuple[threading.Thread, list]:
    result: list = []
    thread = threading.Thread(target=lambda: result.append(func()), daemon=True)
    thread.start()
    return thread, result


def test_a_slow_ttl_refresh_does_not_hold_up_requests_whose_key_we_have(jwks_server, rsa_keys):
    """Keys past their TTL are refetched by one request; the others keep using them meanwhile."""
    jwks_server.publish(rsa_keys[0], "k1")
    verifier = SessionTokenVerifier(
        algorithms=("RS256",), issuer=ISSUER, audience=AUDIENCE, jwks=JwksCache(jwks_server.url, ttl=0, min_refresh=0)
    )
    assert verifier.user_of(rs_token(rsa_keys[0], "k1")) == "alice"
    jwks_server.hold = threading.Event()  # the identity provider turns slow
    refreshing, _ = _in_thread(lambda: verifier.user_of(rs_token(rsa_keys[0], "k1")))
    wait_until(lambda: jwks_server.hits == 2, 5, what="the refresh to start")  # that request is now fetching
    meanwhile, answer = _in_thread(lambda: verifier.user_of(rs_token(rsa_keys[0], "k1", sub="bob")))
    meanwhile.join(timeout=5)
    assert answer == ["bob"]  # answered with the keys we had, while the fetch is still held
    assert refreshing.is_alive() and jwks_server.hits == 2  # and it did not start a second fetch
    jwks_server.hold.set()
    refreshing.join(timeout=5)
    assert not refreshing.is_alive()


def test_requests_for_a_new_kid_wait_for_the_fetch_in_flight_instead_of_starting_another(jwks_server, rsa_keys):
    jwks_server.publish(rsa_keys[0], "k1")
    verifier = jwks_verifier(jwks_server.url)
    assert verifier.user_of(rs_token(rsa_keys[0], "k1")) == "alice"
    jwks_server.publish(rsa_keys[1], "k2")  # rotation, and the identity provider is slow to answer
    jwks_server.hold = threading.Event()
    first, first_answer = _in_thread(lambda: verifier.user_of(rs_token(rsa_keys[1], "k2")))
    wait_until(lambda: jwks_server.hits == 2, 5, what="the fetch to start")
    second, second_answer = _in_thread(lambda: verifier.user_of(rs_token(rsa_keys[1], "k2", sub="bob")))
    time.sleep(0.1)
    assert second.is_alive()  # waiting for the fetch in flight, which will bring k2
    jwks_server.hold.set()
    first.join(timeout=5)
    second.join(timeout=5)
    assert (first_answer, second_answer) == (["alice"], ["bob"])
    assert jwks_server.hits == 2


@pytest.mark.parametrize(
    "case",
    ["key published for another alg", "kid names a key of ours but another key signed", "kid not a string", "hs256"],
)
def test_hostile_tokens_against_jwks(jwks_server, rsa_keys, case):
    jwks_server.publish(rsa_keys[0], "k1", alg="RS512" if case == "key published for another alg" else None)
    verifier = SessionTokenVerifier(
        algorithms=("RS256", "RS512"), issuer=ISSUER, audience=AUDIENCE, jwks=JwksCache(jwks_server.url, min_refresh=0)
    )
    token = {
        "key published for another alg": lambda: rs_token(rsa_keys[0], "k1", alg="RS256"),
        "kid names a key of ours but another key signed": lambda: rs_token(rsa_keys[1], "k1"),
        "kid not a string": lambda: forged({"alg": "RS256", "kid": 7}, claims(), b"x" * 32),
        "hs256": lambda: forged({"alg": "HS256", "kid": "k1"}, claims(), b"x" * 32),
    }[case]()
    with pytest.raises(Unauthenticated):
        verifier.user_of(token)


def test_an_unreachable_jwks_refuses_tokens_with_401_not_5xx(rsa_keys):
    verifier = jwks_verifier("http://127.0.0.1:9/jwks.json")
    with pytest.raises(Unauthenticated):
        verifier.user_of(rs_token(rsa_keys[0], "k1"))


# -- over HTTP ------------------------------------------------------------------------------------------------------
@pytest.fixture
def jwt_env(settings_env):
    return {
        **settings_env,
        "CONNECT_AUTH": "signed,jwt",
        "JWT_HS256_SECRET": HS_SECRET,
        "JWT_ISSUER": ISSUER,
        "JWT_AUDIENCE": AUDIENCE,
        "JWT_COOKIE": "session",
    }


def test_session_token_in_bearer_or_cookie_opens_only_its_own_user(jwt_env, emulator):
    client = create_app(jwt_env).test_client()
    assert client.get("/connect/alice", headers={"Authorization": f"Bearer {hs_token()}"}).status_code == 302
    client.set_cookie("session", hs_token(sub="bob"))
    assert client.get("/connect/bob").status_code == 302
    calls = emulator.calls()

    wrong_user = client.get("/connect/alice", headers=JSON)  # the cookie says bob
    assert wrong_user.status_code == 403 and wrong_user.json["error"]["code"] == "wrong_user"
    client.delete_cookie("session")
    for token in [t for _, t in HOSTILE_HS]:
        response = client.get("/connect/alice", headers={**JSON, "Authorization": f"Bearer {token}"})
        assert response.status_code == 401
    assert client.get("/connect/alice", headers=JSON).status_code == 401
    assert emulator.calls() == calls


def test_modes_combine_and_a_bad_bearer_never_falls_through(jwt_env, emulator):
    client = create_app(jwt_env).test_client()
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    assert client.get("/connect/bob", headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"}).status_code == 302
    bad_bearer_good_signature = client.get(
        signed_path("alice", SIGNING_SECRET), headers={**JSON, "Authorization": "Bearer not-a-jwt"}
    )
    assert bad_bearer_good_signature.status_code == 401
    assert emulator.calls() == 2


# -- header mode (trusted auth proxy) -------------------------------------------------------------------------------
@pytest.fixture
def header_env(settings_env):
    return {**settings_env, "CONNECT_AUTH": "header", "TRUSTED_PROXIES": "10.0.0.0/24, 2001:db8::/64"}


def from_peer(client, path, peer, headers):
    return client.get(path, headers={**JSON, **headers}, environ_base={"REMOTE_ADDR": peer})


def test_header_from_a_trusted_proxy_names_the_user(header_env, emulator):
    client = create_app(header_env).test_client()
    assert from_peer(client, "/connect/alice", "10.0.0.7", {"X-Forwarded-User": "alice"}).status_code == 200
    assert from_peer(client, "/connect/bob", "2001:db8::5", {"X-Forwarded-User": "bob"}).status_code == 200
    assert from_peer(client, "/connect/bob", "::ffff:10.0.0.7", {"X-Forwarded-User": "bob"}).status_code == 200


HOSTILE_PROXY_REQUESTS = [
    ("untrusted peer", "192.0.2.10", {"X-Forwarded-User": "alice"}, 401),
    ("peer just outside the range", "10.0.1.1", {"X-Forwarded-User": "alice"}, 401),
    (
        "untrusted peer claims a trusted address",
        "192.0.2.10",
        {"X-Forwarded-User": "alice", "X-Forwarded-For": "10.0.0.7"},
        401,
    ),
    ("trusted peer, no header", "10.0.0.7", {}, 401),
    ("trusted peer, empty header", "10.0.0.7", {"X-Forwarded-User": " "}, 401),
    ("trusted peer, two users", "10.0.0.7", {"X-Forwarded-User": "alice, bob"}, 401),
    ("trusted peer, another user", "10.0.0.7", {"X-Forwarded-User": "bob"}, 403),
    ("trusted peer, case differs", "10.0.0.7", {"X-Forwarded-User": "Alice"}, 403),
    ("header name the proxy does not set", "10.0.0.7", {"X-Auth-User": "alice"}, 401),
]


@pytest.mark.parametrize(
    ("case", "peer", "headers", "status"), HOSTILE_PROXY_REQUESTS, ids=[c[0] for c in HOSTILE_PROXY_REQUESTS]
)
def test_hostile_proxy_requests_are_refused(header_env, emulator, case, peer, headers, status):
    # With one trusted proxy hop configured, X-Forwarded-For changes the rate-limit address but never the peer check.
    client = create_app({**header_env, "TRUSTED_PROXY_COUNT": "1"}).test_client()
    assert from_peer(client, "/connect/alice", peer, headers).status_code == status
    assert emulator.calls() == 0


def test_proxy_header_is_read_from_the_socket_peer_behind_proxyfix(header_env, emulator):
    client = create_app({**header_env, "TRUSTED_PROXY_COUNT": "1"}).test_client()
    # The trusted proxy itself connects; the client address it reports does not matter for identity.
    response = from_peer(
        client, "/connect/alice", "10.0.0.7", {"X-Forwarded-User": "alice", "X-Forwarded-For": "198.51.100.9"}
    )
    assert response.status_code == 200


def test_two_proxy_user_headers_are_refused(header_env, emulator):
    client = create_app(header_env).test_client()
    response = client.get(
        "/connect/alice",
        headers=[("Accept", "application/json"), ("X-Forwarded-User", "alice"), ("X-Forwarded-User", "bob")],
        environ_base={"REMOTE_ADDR": "10.0.0.7"},
    )
    assert response.status_code == 401 and emulator.calls() == 0


def test_header_mode_without_trusted_proxies_refuses_to_start(settings_env):
    with pytest.raises(ConfigError) as caught:
        create_app({**settings_env, "CONNECT_AUTH": "header"})
    assert str(caught.value).startswith("TRUSTED_PROXIES:")


def test_query_is_never_a_credential_for_jwt_or_header(jwt_env, emulator):
    client = create_app(jwt_env).test_client()
    query = dict(parse_qsl(f"jwt={hs_token()}&session={hs_token()}&X-Forwarded-User=alice"))
    assert client.get("/connect/alice", query_string=query, headers=JSON).status_code == 401
    assert emulator.calls() == 0
