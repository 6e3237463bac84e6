"""Secrets at rest: cached linking URLs are Fernet-encrypted in Redis with CACHE_ENCRYPTION_KEY, with rotation."""

from __future__ import annotations

import json

import pytest
from cryptography.fernet import Fernet

from service import ConfigError, create_app
from service.auth import signed_path
from service.links import FernetCodec
from tests.conftest import API_KEY, SIGNING_SECRET

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

KEY_1, KEY_2 = Fernet.generate_key().decode(), Fernet.generate_key().decode()


def link_values(redis_client) -> list[bytes]:
    return [redis_client.get(key) for key in redis_client.keys("connect:link:v1:*") if not key.endswith(b":lock")]


def test_cache_values_are_encrypted_and_still_served(settings_env, emulator, redis_client):
    client = create_app({**settings_env, "CACHE_ENCRYPTION_KEY": KEY_1}).test_client()
    first = client.get(signed_path("alice", SIGNING_SECRET))
    second = client.get(signed_path("alice", SIGNING_SECRET))
    assert first.headers["Location"] == second.headers["Location"] and emulator.calls() == 1
    (value,) = link_values(redis_client)
    assert b"http" not in value and API_KEY.encode() not in value and b"eyJ" not in value
    assert FernetCodec(KEY_1).decode(value).startswith(b"{")


def test_without_a_key_values_are_plain(settings_env, emulator, redis_client):
    create_app(settings_env).test_client().get(signed_path("alice", SIGNING_SECRET))
    (value,) = link_values(redis_client)
    assert b"http" in value  # what encryption prevents


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


def test_remote_redis_without_encryption_warns_at_start(settings_env, capsys):
    remote = "redis://cache.internal.example:6379/0"
    create_app({**settings_env, "REDIS_URL": remote})
    assert "CACHE_ENCRYPTION_KEY is not set" in _warnings(capsys)
    create_app({**settings_env, "REDIS_URL": remote, "CACHE_ENCRYPTION_KEY": KEY_1})
    assert "CACHE_ENCRYPTION_KEY" not in _warnings(capsys)
    create_app(settings_env)  # loopback Redis: nothing to warn about
    assert "CACHE_ENCRYPTION_KEY" not in _warnings(capsys)


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
