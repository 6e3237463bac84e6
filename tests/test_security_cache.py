"""Secrets at rest and a cache that is not trusted on read: every cached value is a Fernet token (CACHE_ENCRYPTION_KEY,
with rotation, or a key derived from the API key), and a value that fails to decrypt or holds a URL that fails the
linking-URL check is a miss, never a redirect and never a 500."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

from service import ConfigError, create_app
from service.auth import signed_path
from service.crypto import FernetCodec
from tests.conftest import API_KEY, INTERNAL_TOKEN, SIGNING_SECRET

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def _cached_keys(redis_client) -> set[bytes]:
    return {k for k in redis_client.keys("connect:link:v1:*") if not k.endswith((b":lock", b":error"))}


def link_values(redis_client) -> list[bytes]:
    return [redis_client.get(key) for key in redis_client.keys("connect:link:v1:*") if not key.endswith(b":lock")]


def assert_sealed(value: bytes, location: str) -> None:
    """The cached value holds neither the URL, nor its token, nor the API key in clear.

    Only long needles: a Fernet token is random base64, so a short one such as "eyJ" turns up in it by chance.
    """
    query = parse_qs(urlsplit(location).query)
    (token,) = query.get("session") or query["jwt"]
    assert len(token) >= 16 and value.startswith(b"gAAAAA")
    for needle in (location, token, API_KEY):
        assert needle.encode() not in value


def test_cache_values_are_encrypted_and_still_served(settings_env, emulator, redis_client):
    client = create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_1}).test_client()
    first = client.get(signed_path("alice", SIGNING_SECRET))
    second = client.get(signed_path("alice", SIGNING_SECRET))
    assert first.headers["Location"] == second.headers["Location"] and emulator.calls() == 1
    (value,) = link_values(redis_client)
    assert_sealed(value, first.headers["Location"])
    assert FernetCodec(KEY_1).decode(value).startswith(b"{")


def test_without_a_key_values_are_still_encrypted_with_a_key_derived_from_the_api_key(
    settings_env, emulator, redis_client
):
    from service.crypto import derived_cache_key

    client = create_app(settings_env).test_client()
    first = client.get(signed_path("alice", SIGNING_SECRET))
    assert client.get(signed_path("alice", SIGNING_SECRET)).headers["Location"] == first.headers["Location"]
    (value,) = link_values(redis_client)
    assert_sealed(value, first.headers["Location"])
    assert FernetCodec(derived_cache_key(API_KEY)).decode(value).startswith(b"{")


FORGED_URLS = [
    "https://evil.example/phish",
    "javascript:alert(document.domain)",
    "http://127.0.0.1:1/\r\nSet-Cookie: x=1",
    "https://profile.ayrshare.com/?session=ayr_ls_x\r\nX-Injected: 1",
]


@pytest.mark.parametrize("encryption_key", [None, KEY_1], ids=["derived-key", "CACHE_ENCRYPTION_KEY"])
@pytest.mark.parametrize("forged_url", FORGED_URLS)
def test_a_value_written_by_someone_else_is_a_miss_never_a_redirect(
    settings_env, emulator, redis_client, encryption_key, forged_url
):
    from prometheus_client import REGISTRY

    env = {**settings_env, **({"CACHE_ENCRYPTION_KEY": encryption_key} if encryption_key else {})}
    client = create_app(env).test_client()
    client.get(signed_path("alice", SIGNING_SECRET))
    (key,) = _cached_keys(redis_client)
    forged = json.dumps({"u": forged_url, "e": time.time() + 3600}).encode()
    rejected = REGISTRY.get_sample_value("ayrshare_connect_cache_rejected_total") or 0
    redis_client.set(key, forged, ex=3600)  # what anyone who can write to Redis can do

    second = client.get(signed_path("alice", SIGNING_SECRET))
    assert second.status_code == 302 and second.headers["Location"].startswith(emulator.origin)
    assert emulator.calls() == 2  # a miss: the forged value was not served
    assert REGISTRY.get_sample_value("ayrshare_connect_cache_rejected_total") > rejected  # (each read counts)


@pytest.mark.parametrize("forged_url", FORGED_URLS)
def test_a_well_encrypted_value_with_a_bad_url_is_still_a_miss(settings_env, emulator, redis_client, forged_url):
    # Even with the key (a leaked CACHE_ENCRYPTION_KEY), a stored URL passes the same check as Ayrshare's answers.
    client = create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_1}).test_client()
    client.get(signed_path("alice", SIGNING_SECRET))
    (key,) = _cached_keys(redis_client)
    record = {"k": key.decode(), "u": forged_url, "e": time.time() + 3600}  # all but the URL as the service writes
    redis_client.set(key, FernetCodec(KEY_1).encode(json.dumps(record).encode()), ex=3600)
    answer = client.get(signed_path("alice", SIGNING_SECRET))
    assert answer.status_code == 302 and answer.headers["Location"].startswith(emulator.origin)
    assert emulator.calls() == 2


def test_another_users_value_copied_under_a_users_key_is_a_miss(settings_env, emulator, redis_client):
    # Fernet proves the service wrote a value, not for whom: the record names its key, so a copy is not served.
    from prometheus_client import REGISTRY

    client = create_app(settings_env).test_client()
    alice_url = client.get(signed_path("alice", SIGNING_SECRET)).headers["Location"]
    (alice_key,) = _cached_keys(redis_client)
    client.get(signed_path("bob", SIGNING_SECRET))
    (bob_key,) = _cached_keys(redis_client) - {alice_key}
    rejected = REGISTRY.get_sample_value("ayrshare_connect_cache_rejected_total") or 0
    redis_client.set(bob_key, redis_client.get(alice_key), ex=3600)

    again = client.get(signed_path("bob", SIGNING_SECRET)).headers["Location"]
    assert again != alice_url and emulator.calls() == 3  # a miss: Bob gets a link of his own
    assert REGISTRY.get_sample_value("ayrshare_connect_cache_rejected_total") > rejected


def test_another_users_index_entry_copied_into_a_users_index_is_not_revoked_with_it(
    settings_env, emulator, redis_client
):
    client = create_app(settings_env).test_client()
    alice_url = client.get(signed_path("alice", SIGNING_SECRET)).headers["Location"]
    (alice_index,) = redis_client.keys("connect:user:v1:*:links")
    client.get(signed_path("bob", SIGNING_SECRET))
    (bob_index,) = set(redis_client.keys("connect:user:v1:*:links")) - {alice_index}
    redis_client.hset(bob_index, mapping=redis_client.hgetall(alice_index))

    answer = client.delete("/internal/v1/users/bob/links", headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"})
    assert answer.status_code == 200 and answer.json["linksDropped"] == 1  # Bob's own link only
    assert client.get(signed_path("alice", SIGNING_SECRET)).headers["Location"] == alice_url
    assert emulator.calls() == 2  # Alice's link was neither dropped nor revoked


def test_a_failure_marker_written_by_someone_else_is_ignored(settings_env, emulator, redis_client):
    # A marker's words become an answer's message and its hold keeps a user waiting: only the service may write one.
    client = create_app(settings_env).test_client()
    client.get(signed_path("alice", SIGNING_SECRET))
    (key,) = _cached_keys(redis_client)
    redis_client.delete(key)
    phishing = "Your account is locked: call +1 555 0100."
    forged = {"status": 503, "code": "upstream_rate_limited", "message": phishing, "retry_after": 300}
    redis_client.set(key + b":error", json.dumps({**forged, "hold_until": time.time() + 300}), ex=300)

    answer = client.get(signed_path("alice", SIGNING_SECRET))
    assert answer.status_code == 302 and answer.headers["Location"].startswith(emulator.origin)
    assert phishing not in answer.get_data(as_text=True) and emulator.calls() == 2


def test_another_users_failure_marker_copied_under_a_users_key_is_ignored(settings_env, emulator, redis_client):
    # Sealed, a marker is still only good for its own key: Alice's 429 hold copied beside Bob's link holds Bob off
    # nothing.
    client = create_app(settings_env).test_client()
    emulator.set_knobs(fault="429", fault_count=1)
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 503
    (alice_marker,) = redis_client.keys("connect:link:v1:*:error")
    client.get(signed_path("bob", SIGNING_SECRET))
    (bob_key,) = _cached_keys(redis_client)
    redis_client.delete(bob_key)
    redis_client.set(bob_key + b":error", redis_client.get(alice_marker), ex=300)

    answer = client.get(signed_path("bob", SIGNING_SECRET))
    assert answer.status_code == 302 and emulator.calls() == 3  # Bob's own miss, not Alice's hold


def test_an_index_entry_written_before_entries_named_their_user_is_still_revoked(settings_env, emulator, redis_client):
    # Entries of the previous release carry no user scope; revoke must still see them for the index's 49 hours.
    client = create_app(settings_env).test_client()
    client.get(signed_path("alice", SIGNING_SECRET))
    (index,) = redis_client.keys("connect:user:v1:*:links")
    store = client.application.extensions["link_store"]
    scope = index.decode().split("{")[1].split("}")[0]
    (entry,) = store.handed_out(scope)
    field = next(iter(redis_client.hkeys(index)))
    old_format = {"s": entry.session_id, "k": entry.cache_key, "e": entry.expires_at, "c": entry.created_at}
    redis_client.hset(index, field, store.codec.encode(json.dumps(old_format).encode()))

    assert store.handed_out(scope) == [entry]
    answer = client.delete("/internal/v1/users/alice/links", headers={"Authorization": f"Bearer {INTERNAL_TOKEN}"})
    assert answer.json["linksDropped"] == 1


def test_rotation_new_key_first_old_entries_still_read(settings_env, emulator, redis_client):
    create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_1}).test_client().get(signed_path("alice", SIGNING_SECRET))
    rotated = create_app({**settings_env, "CACHE_ENCRYPTION_KEY": f"{KEY_2},{KEY_1}"}).test_client()
    assert rotated.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    assert emulator.calls() == 1  # the entry written with the old key was a hit
    rotated.get(signed_path("bob", SIGNING_SECRET))
    newest = [v for v in link_values(redis_client) if _readable(KEY_2, v)]
    assert len(newest) == 1  # new entries use the first key


def test_an_entry_no_key_can_read_is_a_miss_not_an_error(settings_env, emulator, redis_client):
    create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_1}).test_client().get(signed_path("alice", SIGNING_SECRET))
    other = create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_2}).test_client()
    assert other.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    assert emulator.calls() == 2


@pytest.mark.parametrize("value", ["not-a-key", f"{KEY_1},short", "a" * 44])
def test_bad_keys_stop_the_start_without_echoing_them(settings_env, value):
    with pytest.raises(ConfigError) as caught:
        create_app({**settings_env, "CACHE_ENCRYPTION_KEY": value})
    assert str(caught.value).startswith("CACHE_ENCRYPTION_KEY:")
    assert value not in str(caught.value) and "not-a-key" not in str(caught.value)


def test_remote_redis_without_tls_warns_at_start(settings_env, capsys):
    remote = "redis://cache.internal.example:6379/0"
    create_app({**settings_env, "REDIS_URL": remote})
    assert "without TLS" in _warnings(capsys) and "CACHE_ENCRYPTION_KEY" not in _warnings(capsys)
    create_app(settings_env)  # loopback Redis: nothing to warn about
    assert "REDIS_URL" not in _warnings(capsys)


def _readable(key: str, value: bytes) -> bool:
    try:
        FernetCodec(key).decode(value)
        return True
    except ValueError:
        return False


def _warnings(capsys) -> str:
    """The service's start-up warnings (JSON lines on stdout)."""
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return "\n".join(line["msg"] for line in lines if line["level"] == "warning" and line["logger"] == "service")
