"""Exactly one profile per user across gunicorn instances, and a crash after Ayrshare's answer left visible."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from service.auth import signed_path
from tests.conftest import SIGNING_SECRET
from tests.support.processes import PROJECT_ROOT


def test_sixty_first_clicks_on_three_instances_create_exactly_one_profile(start_service, emulator, migrated):
    instances = [start_service(workers=2, DATABASE_URL=migrated, PROFILE_AUTO_CREATE="true") for _ in range(3)]
    emulator.set_knobs(latency_ms=300)  # a slow create, so the clicks really overlap
    path = signed_path("newcomer", SIGNING_SECRET, 300)

    def click(index: int) -> int:
        url = instances[index % 3].url + path
        return requests.get(url, allow_redirects=False, timeout=60).status_code

    with ThreadPoolExecutor(max_workers=60) as pool:
        statuses = list(pool.map(click, range(60)))
    assert statuses == [302] * 60
    assert emulator.profile_stats()["creates"] == 1
    assert emulator.created_profiles()["count"] == 1


CRASHING_CLIENT = textwrap.dedent(
    """
    import os
    from service import create_app
    from service.profiles.directory import Directory
    from service.auth import signed_path

    def crash(*args, **kwargs):
        os._exit(3)  # the process dies after Ayrshare answered, before the key is committed

    Directory.complete = crash
    client = create_app().test_client()
    client.get(signed_path("crashvictim", os.environ["CONNECT_SIGNING_SECRET"], 300))
    """
)


def flask_cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    return subprocess.run(
        [flask, "--app", "service", *args], env=env, cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_crash_after_the_answer_is_listed_by_profiles_pending(settings_env, emulator, migrated):
    env = {
        **{name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ},
        **settings_env,
        "ENV_FILE": "/nonexistent/.env",
        "DATABASE_URL": migrated,
        "PROFILE_AUTO_CREATE": "true",
        "AYRSHARE_DEADLINE_SECONDS": "4",  # the claim's lease is this + 5 s: time for a cold `flask` to list it
        "AYRSHARE_CONNECT_TIMEOUT": "0.5",
        "AYRSHARE_READ_TIMEOUT": "1",
        "REQUEST_DEADLINE_SECONDS": "4",
    }
    crashed = subprocess.run(
        [sys.executable, "-c", CRASHING_CLIENT], env=env, cwd=PROJECT_ROOT, capture_output=True, timeout=60
    )
    assert crashed.returncode == 3, crashed.stderr
    assert emulator.profile_stats()["creates"] == 1  # Ayrshare made the profile; its key died with the process

    listed = flask_cli(env, "profiles", "pending")
    assert listed.returncode == 0 and "crashvictim\tin_progress\tcreating" in listed.stdout
    give_up = time.monotonic() + 30
    while "needs_operator" not in listed.stdout and time.monotonic() < give_up:  # the lease runs out after 9 s
        time.sleep(1)
        listed = flask_cli(env, "profiles", "pending")
    assert "crashvictim\tneeds_operator\tcreating\ttitle=crashvictim" in listed.stdout

    # A later click is told an operator must act; it never makes a second profile.
    from service import create_app

    client = create_app({**settings_env, "DATABASE_URL": migrated, "PROFILE_AUTO_CREATE": "true"}).test_client()
    answer = client.get(signed_path("crashvictim", SIGNING_SECRET, 300), headers={"Accept": "application/json"})
    assert answer.status_code == 409 and answer.json["error"]["code"] == "profile_creation_unresolved"
    assert emulator.profile_stats()["creates"] == 1
    for secret in [settings_env["AYRSHARE_API_KEY"], settings_env["DATA_ENCRYPTION_KEY"]]:
        assert secret not in listed.stdout + listed.stderr
