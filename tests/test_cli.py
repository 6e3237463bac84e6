"""The `flask --app service ...` commands: help needs no configuration; check-config checks what it can reach."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _flask(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "flask"), "--app", "service", *args],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    "command",
    [[], ["check-config"], ["sign-url"], ["db"], ["db", "upgrade"], ["profiles"], ["profiles", "pending"], ["openapi"]],
    ids=lambda command: " ".join(command) or "flask",
)
def test_help_works_without_any_configuration(command, tmp_path):
    result = _flask([*command, "--help"], {}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("Usage: flask") and result.stderr == ""


def test_the_top_level_help_lists_every_command_without_configuration(tmp_path):
    listed = _flask(["--help"], {}, tmp_path).stdout
    for command in ("check-config", "sign-url", "db", "profiles", "webhooks", "openapi"):
        assert f"  {command} " in listed


@pytest.mark.parametrize(
    "command", [["check-config"], ["sign-url", "alice"], ["db", "upgrade"], ["profiles", "list"], ["routes"]]
)
def test_a_real_command_without_configuration_ends_with_the_one_line_error_and_exit_code_2(command, tmp_path):
    result = _flask(command, {}, tmp_path)
    assert result.returncode == 2
    assert result.stderr == "configuration error: AYRSHARE_API_KEY: is required but not set\n"
    assert result.stdout == ""


@pytest.fixture
def configured(profiles_file, tmp_path, redis_url) -> dict[str, str]:
    from tests.conftest import API_KEY, DATA_KEY, SIGNING_SECRET

    return {
        "ENV_FILE": "/nonexistent",
        "AYRSHARE_API_KEY": API_KEY,
        "AYRSHARE_DOMAIN": "ACME",
        "PROFILE_KEYS_FILE": str(profiles_file),
        "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
        "DATA_ENCRYPTION_KEY": DATA_KEY,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'directory.db'}",
        "REDIS_URL": redis_url,
    }


def test_check_config_reports_each_reachable_dependency(configured, tmp_path):
    assert _flask(["db", "upgrade"], configured, tmp_path).returncode == 0
    result = _flask(["check-config"], configured, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    redis_at = configured["REDIS_URL"].split("//")[1].split("/")[0]
    assert lines[1:] == [f"cache: ok (Redis at {redis_at})", f"database: ok (sqlite at {tmp_path / 'directory.db'})"]


def test_check_config_fails_naming_an_unreachable_redis_and_an_unmigrated_database(configured, tmp_path):
    from tests.support.processes import free_port

    port = free_port()
    env = {**configured, "REDIS_URL": f"redis://:REDIS-PASSWORD-x1@127.0.0.1:{port}/0"}
    result = _flask(["check-config"], env, tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"cache: failing (Redis at 127.0.0.1:{port} does not answer PING (ConnectionError))" in lines
    assert (
        f"database: not migrated yet; bin/boot migrates it as it starts (sqlite at {tmp_path / 'directory.db'})"
        in lines
    )
    assert (
        "database: not migrated (run `flask --app service db upgrade`)"
        in _flask(["check-config"], {**env, "DATABASE_MIGRATE_ON_START": "0"}, tmp_path).stdout.splitlines()
    )
    assert "REDIS-PASSWORD-x1" not in result.stdout + result.stderr


def test_check_config_names_a_database_whose_password_has_url_characters_and_never_prints_it(configured, tmp_path):
    from tests.support.processes import free_port

    port = free_port()
    env = {**configured, "DATABASE_URL": f"postgresql+psycopg://app:s3cr#t?Pa/ss@127.0.0.1:{port}/ayrshare"}
    result = _flask(["check-config"], env, tmp_path)
    assert result.returncode == 1, result.stderr
    where = f"postgresql at 127.0.0.1:{port}/ayrshare"
    assert f"database: failing ({where} does not answer or refuses the user, password or database name)" in (
        result.stdout.splitlines()
    )
    assert "s3cr" not in result.stdout + result.stderr and "Pa/ss" not in result.stdout + result.stderr


def test_check_config_tells_a_refused_redis_password_from_a_redis_that_does_not_answer(configured, tmp_path):
    from tests.support.processes import RedisServer

    server = RedisServer().start()
    try:
        server.client().config_set("requirepass", "the-right-one")
        env = {**configured, "REDIS_URL": f"redis://:REDIS-PASSWORD-x1@127.0.0.1:{server.port}/0"}
        result = _flask(["check-config"], env, tmp_path)
    finally:
        server.kill()
    assert result.returncode == 1
    assert f"cache: failing (Redis at 127.0.0.1:{server.port} refuses the user or password in REDIS_URL)" in (
        result.stdout.splitlines()
    )
    assert "REDIS-PASSWORD-x1" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REDIS_URL", "redis://:REDIS-PASSWORD-x1@127.0.0.1:notaport/0"),
        ("REDIS_URL", "redis+sentinel://:REDIS-PASSWORD-x1@h1:26379,h2:badport/mymaster"),
        ("DATABASE_URL", "postgresql+psycopg://app:DB-PASSWORD-x1@db:abc/ayrshare"),
        ("DATABASE_URL", "postgresql+psycopg://app:DB-PASSWORD@x1@127.0.0.1:5432/ayrshare"),
        ("DATA_DIR", "/proc/ayrshare-connect"),  # root may write in /proc by access(2), yet cannot make a folder there
        ("REDIS_URL", "redis+cluster://:REDIS-PASSWORD-x1@127.0.0.1:1"),  # the Cluster client connects as it is made
    ],
)
def test_a_malformed_connection_setting_ends_with_one_line_naming_it(configured, tmp_path, name, value):
    env = {**configured, name: value}
    if name == "DATA_DIR":
        del env["DATABASE_URL"]
    for command in (["check-config", "--offline"], ["db", "upgrade"]):
        result = _flask(command, env, tmp_path)
        assert result.returncode == 2, result.stderr
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("configuration error: ")
        assert result.stderr.split(":")[1].strip() in (name, "DATABASE_URL")  # the folder comes from DATA_DIR
        assert "PASSWORD" not in result.stderr and result.stdout == ""


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("PROFILE_KEYS_FILE", "no such file, or in a folder this process may not search"),
        ("PROFILE_KEYS_FILE", "this process may not read the file"),
        ("DATA_DIR", "cannot create or write the folder there"),
    ],
)
def test_a_path_this_process_may_not_reach_is_refused_with_one_line(configured, tmp_path, name, problem):
    """A parent folder without search permission made stat() fail with EACCES, and that ended in a traceback."""
    from tests.support.processes import without_root_privileges

    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "profiles.json").write_text('{"alice": "key-1234567"}')
    path = locked / ("data" if name == "DATA_DIR" else "profiles.json")
    if problem.startswith("this process may not read"):
        path.chmod(0o000)
    else:
        locked.chmod(0o000)
    env = {**configured, name: str(path), "PATH": "/usr/bin:/bin"}
    if name == "DATA_DIR":
        del env["DATABASE_URL"]
    try:
        result = subprocess.run(
            [*without_root_privileges(), str(BIN / "flask"), "--app", "service", "check-config", "--offline"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        locked.chmod(0o700)
    assert result.returncode == 2, result.stderr
    assert result.stderr == f"configuration error: {name}: {problem}\n"


def test_check_config_offline_checks_only_the_settings(configured, tmp_path):
    from tests.support.processes import free_port

    env = {**configured, "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"}
    result = _flask(["check-config", "--offline"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == ["configuration ok (auth: signed, cache: redis)"]


def test_check_config_without_redis_says_there_is_nothing_to_reach(configured, tmp_path):
    env = {name: value for name, value in configured.items() if name != "REDIS_URL"}
    assert _flask(["db", "upgrade"], env, tmp_path).returncode == 0
    result = _flask(["check-config"], env, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cache: in-process (REDIS_URL is not set), nothing to reach" in result.stdout.splitlines()


def test_sign_url_refuses_a_lifetime_the_service_would_refuse(configured, tmp_path):
    refused = _flask(["sign-url", "alice", "--ttl", "3600"], configured, tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "must be 1 to SIGNED_LINK_MAX_TTL_SECONDS (900)" in refused.stderr
    longest = _flask(["sign-url", "alice", "--ttl", "900"], configured, tmp_path)
    assert longest.returncode == 0 and longest.stdout.startswith("/connect/alice?")


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["bad user/x"], "The user id must be"),
        (["alice", "--redirect", "https://elsewhere.example/done"], "'redirect' must be an https URL"),
        (["alice", "--allowed-social", "myspace"], "'allowedSocial' must be a comma-separated list"),
        (["alice", "--ttl", "0"], "Invalid value for '--ttl'"),
        (["alice", "--allowed-social", "facebook\n"], "must be one line each"),  # the service refuses line breaks
    ],
)
def test_sign_url_refuses_what_the_service_would_refuse(configured, tmp_path, args, problem):
    refused = _flask(["sign-url", *args], {**configured, "REDIRECT_ALLOWED_HOSTS": "app.example.com"}, tmp_path)
    assert refused.returncode == 2 and refused.stdout == ""
    assert problem in refused.stderr


def test_sign_url_signs_a_redirect_on_an_allowed_host_and_an_allowed_network(configured, tmp_path):
    env = {**configured, "REDIRECT_ALLOWED_HOSTS": "app.example.com"}
    args = ["sign-url", "alice", "--redirect", "https://app.example.com/done", "--allowed-social", "facebook"]
    signed = _flask(args, env, tmp_path)
    assert signed.returncode == 0, signed.stderr
    assert signed.stdout.startswith("/connect/alice?") and "redirect=https" in signed.stdout
