"""What config/gunicorn.conf.py does to each worker beyond gunicorn's own settings."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from service.auth import signed_path
from tests.conftest import SIGNING_SECRET
from tests.support.processes import PROJECT_ROOT, ServiceProcess


def test_each_worker_keeps_a_connection_to_ayrshare_for_every_call_it_can_have_in_flight(start_service, emulator):
    """With requests' default pool (10 connections), a burst of 20 misses would close 10 connections after it, with a
    "Connection pool is full" warning each, and the next burst would open them again (TCP and TLS handshakes)."""
    service = start_service(workers=1, GUNICORN_THREADS="20")
    emulator.set_knobs(latency_ms=300)

    def status(user: str) -> int:
        url = service.url + signed_path(user, SIGNING_SECRET)
        return requests.get(url, allow_redirects=False, timeout=10).status_code

    for burst in (range(0, 20), range(20, 40)):  # 20 misses at once, twice, each for users nobody asked for yet
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert list(pool.map(status, [f"user{i}" for i in burst])) == [302] * 20

    stats = emulator.stats()
    assert emulator.calls() == 40
    connections = stats["generate_connections"] + stats["link_session_connections"]
    assert connections <= 20, connections
    assert "Connection pool is full" not in service.log()


def test_an_unreachable_redis_cluster_stops_the_start_with_one_line_saying_so(start_service):
    """redis-py's Cluster client reads the slot map as it is made, so workers could not start: say so once, and stop."""
    from tests.support.processes import free_port

    port = free_port()
    service = start_service(wait=False, REDIS_URL=f"redis+cluster://:pw-x1@127.0.0.1:{port}")
    assert service.proc.wait(30) != 0
    said = [line for line in service.log().splitlines() if "Redis Cluster" in line]
    assert len(said) == 1 and f"Redis Cluster at 127.0.0.1:{port} cannot be reached" in said[0]
    assert "Traceback" not in service.log() and "pw-x1" not in service.log()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("GUNICORN_WORKERS", "many"),
        ("GUNICORN_THREADS", "0"),
        ("GUNICORN_WORKER_CLASS", "tornado"),
        ("REDIS_URL", "redis://:pw-x1@127.0.0.1:notaport/0"),
        ("DATABASE_URL", "postgresql+psycopg://app:pw-x1@db:abc/ayrshare"),
    ],
)
def test_a_bad_gunicorn_setting_stops_the_start_with_one_line_naming_it(start_service, name, value):
    service = start_service(wait=False, **{name: value})
    assert service.proc.wait(30) == 2
    errors = [line for line in service.log().splitlines() if "configuration error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"configuration error: {name}:")
    assert value not in errors[0].partition(":")[2].partition(":")[2] or value == "0"


def test_gunicorn_takes_its_settings_from_the_validated_service_settings(settings_env):
    env = {**ServiceProcess(settings_env).env, "GUNICORN_THREADS": "3", "GUNICORN_TIMEOUT": "40", "BIND": "127.0.0.1:0"}
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    printed = subprocess.run(
        [gunicorn, "-c", "config/gunicorn.conf.py", "--print-config", "service:create_app()"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    config = {name.strip(): value.strip() for name, _, value in (line.partition("=") for line in printed.splitlines())}
    assert config["threads"] == "3" and config["timeout"] == "40"
    assert config["workers"] == "2" and config["worker_class"] == "gthread"
    assert config["bind"] == "['127.0.0.1:0']"


def _printed_config(env: dict[str, str]) -> dict[str, str]:
    """What gunicorn itself resolves from config/gunicorn.conf.py under `env` (its --print-config)."""
    gunicorn = str(Path(sys.executable).parent / "gunicorn")
    printed = subprocess.run(
        [gunicorn, "-c", "config/gunicorn.conf.py", "--print-config", "service:create_app()"],
        cwd=PROJECT_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    return {name.strip(): value.strip() for name, _, value in (line.partition("=") for line in printed.splitlines())}


def test_port_and_web_concurrency_are_honoured_when_bind_and_gunicorn_workers_are_not_set(settings_env):
    """Cloud Run, Heroku and Render name the port in PORT; Heroku and gunicorn size workers by WEB_CONCURRENCY."""
    env = {**ServiceProcess(settings_env).env, "PORT": "9123", "WEB_CONCURRENCY": "5"}
    config = _printed_config(env)
    assert config["bind"] == "['0.0.0.0:9123']" and config["workers"] == "5"


def test_bind_and_gunicorn_workers_win_over_port_and_web_concurrency(settings_env):
    env = {**ServiceProcess(settings_env).env, "PORT": "9123", "WEB_CONCURRENCY": "5"}
    config = _printed_config({**env, "BIND": "127.0.0.1:9124", "GUNICORN_WORKERS": "3"})
    assert config["bind"] == "['127.0.0.1:9124']" and config["workers"] == "3"
    default = _printed_config(ServiceProcess(settings_env).env)
    assert default["bind"] == "['0.0.0.0:8000']" and default["workers"] == "2"


@pytest.mark.parametrize(("name", "value"), [("PORT", "eighty"), ("PORT", "70000"), ("WEB_CONCURRENCY", "0")])
def test_a_bad_port_or_web_concurrency_stops_the_start_naming_it(start_service, name, value):
    service = start_service(wait=False, **{name: value})
    assert service.proc.wait(30) == 2
    errors = [line for line in service.log().splitlines() if "configuration error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"configuration error: {name}:")
