"""Ayrshare's webhooks through real processes: the service under gunicorn, the emulator over HTTP (its linking page's
buttons and its `webhook_fault` knob), `flask webhooks register|deliver` as subprocesses and a real HTTP receiver
standing in for the team's backend.

What tests/test_webhooks.py checks in process, here across process boundaries: the hook registered by the CLI, a
press on the linking page reaching the directory and the team's backend, the outbox surviving a restart and an
outage of the forward target, two instances sharing one database delivering each event once, and delivery left to
`flask webhooks deliver` under WEBHOOK_DELIVERY=process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
import requests
from standardwebhooks.webhooks import Webhook

from service.auth import signed_path
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET, ayrshare_webhook_headers
from tests.support.emulator_proc import press
from tests.support.processes import PROJECT_ROOT, free_port
from tests.support.webhook_receiver import WebhookReceiver

AUTH = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
SECRET = "ayrshare-webhook-secret-procs-01"
FORWARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
TEAM_PATH = "/hooks/team"
# Short retries at the emulator, so a refused delivery's two retries are over within a second.
RETRY_DELAYS_MS = [100, 200]


# -- helpers ---------------------------------------------------------------------------------------------------------
def eventually(probe, timeout: float = 15.0, what: str = "condition", interval: float = 0.1):
    """Poll `probe` until it returns something truthy; return that, or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(interval)


def flask_cli(env: dict, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`flask --app service ...` (the real `flask` script: the service knows it runs under the CLI by its name)."""
    flask = os.path.join(os.path.dirname(sys.executable), "flask")
    return subprocess.run(
        [flask, "--app", "service", *args],
        env=env,
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def post_event(service, ref_id: str, kind: str = "link", platform: str = "linkedin", n: int = 0) -> dict:
    """POST a signed `social` event straight to an instance; `n` makes otherwise equal bodies distinct."""
    event = {"action": "social", "type": kind, "platform": platform, "refId": ref_id, "details": {"n": n}}
    body = json.dumps(event, separators=(",", ":")).encode()
    answer = requests.post(
        service.url + "/webhooks/ayrshare", data=body, headers=ayrshare_webhook_headers(body, SECRET), timeout=10
    )
    assert answer.status_code == 200, answer.text
    return answer.json()


def deliveries(service, state: str | None = None) -> list[dict]:
    query = f"?state={state}" if state else ""
    answer = requests.get(f"{service.url}/internal/v1/webhooks/deliveries{query}", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["deliveries"]


def make_user(service, user: str) -> str:
    """A user with a real profile at the emulator: its refId."""
    created = requests.post(f"{service.url}/internal/v1/users/{user}/profile", headers=AUTH, timeout=30)
    assert created.status_code == 201, created.text
    return created.json()["refId"]


def open_linking_page(service, user: str) -> requests.Response:
    """What the user's browser does with their signed link: follow /connect/<user> to the emulator's linking page."""
    opened = requests.get(service.url + signed_path(user, SIGNING_SECRET, 300), allow_redirects=False, timeout=30)
    assert opened.status_code == 302, opened.text
    page = requests.get(opened.headers["Location"], timeout=10)
    assert page.status_code == 200, page.text
    return page


def internal_networks(service, user: str) -> list[str]:
    answer = requests.get(f"{service.url}/internal/v1/users/{user}/accounts", headers=AUTH, timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["networks"]


def verified(received, secret: str = FORWARD_SECRET) -> dict:
    """The team's side: Standard Webhooks verification with the spec authors' library."""
    return Webhook(secret).verify(received.body, received.headers)


def service_env(database_url: str, forward_url: str | None, delivery: str = "thread") -> dict[str, str]:
    env = {"DATABASE_URL": database_url, "AYRSHARE_WEBHOOK_SECRET": SECRET, "WEBHOOK_DELIVERY": delivery}
    if forward_url is not None:
        env.update(WEBHOOK_FORWARD_URL=forward_url, WEBHOOK_FORWARD_SECRET=FORWARD_SECRET)
    return env


@pytest.fixture
def receiver():
    with WebhookReceiver(path=TEAM_PATH) as server:
        yield server


@pytest.fixture
def registered(start_service, emulator, migrated, receiver):
    """One instance forwarding to `receiver`, its hook registered by `flask webhooks register`, and user dana."""
    service = start_service(workers=2, **service_env(migrated, receiver.url))
    registering = flask_cli({**service.env, "PUBLIC_BASE_URL": service.url}, "webhooks", "register")
    assert registering.returncode == 0, registering.stderr
    hook = service.url + "/webhooks/ayrshare"
    assert f"registered {hook}" in registering.stdout
    [registration] = emulator.webhooks()["registrations"]
    assert (registration["action"], registration["url"], registration["secretSet"]) == ("social", hook, True)
    assert SECRET not in registering.stdout + registering.stderr
    return service, make_user(service, "dana")


# -- a. end to end -----------------------------------------------------------------------------------------------
def test_a_press_on_the_linking_page_reaches_the_directory_and_the_teams_backend(registered, emulator, receiver):
    service, ref_id = registered
    assert internal_networks(service, "dana") == []  # read once from Ayrshare; the directory now knows "none"
    reads = emulator.profile_stats()["user_reads"]

    assert press(open_linking_page(service, "dana"), "linkedin", "link").status_code == 200

    [attempt] = emulator.wait_for_webhook_attempts(1)
    assert (attempt["refId"], attempt["type"], attempt["statusCode"]) == (ref_id, "link", 200), service.log_tail()
    [forwarded] = receiver.wait_for(1)
    payload = verified(forwarded)
    assert forwarded.path == TEAM_PATH and payload["id"] == forwarded.header("webhook-id")
    assert (payload["type"], payload["user"], payload["network"]) == ("account.linked", "dana", "linkedin")

    assert internal_networks(service, "dana") == ["linkedin"]
    browser = requests.get(
        service.url + signed_path("dana", SIGNING_SECRET, 300).replace("?", "/accounts?", 1), timeout=10
    )
    assert browser.status_code == 200 and browser.json() == {"networks": ["linkedin"]}
    # Both answers came from the directory the webhook updated, not from another read at Ayrshare.
    assert emulator.profile_stats()["user_reads"] == reads
    [listed] = eventually(lambda: deliveries(service, "delivered"), what="the delivery settled")
    assert listed["id"] == payload["id"] and listed["attempts"] == 0

    press(open_linking_page(service, "dana"), "linkedin", "unlink")
    unlinked = verified(receiver.wait_for(2)[1])
    assert (unlinked["type"], unlinked["network"]) == ("account.unlinked", "linkedin")
    assert unlinked["id"] != payload["id"]
    assert internal_networks(service, "dana") == []


def test_the_emulators_faulty_deliveries(registered, emulator, receiver):
    service, ref_id = registered
    emulator.set_knobs(webhook_retry_delays_ms=RETRY_DELAYS_MS)
    assert internal_networks(service, "dana") == []

    # A duplicate delivery: both acknowledged, one event recorded and forwarded.
    emulator.set_knobs(webhook_fault="duplicate")
    emulator.send_webhook("link", "tiktok", ref_id=ref_id)
    attempts = emulator.wait_for_webhook_attempts(2)
    assert [(a["statusCode"], a["fault"]) for a in attempts] == [(200, None), (200, "duplicate")], service.log_tail()
    [forwarded] = receiver.wait_for(1)
    assert verified(forwarded)["network"] == "tiktok"
    eventually(lambda: deliveries(service, "delivered"), what="the delivery settled")
    assert len(deliveries(service)) == 1
    assert internal_networks(service, "dana") == ["tiktok"]

    # A stale timestamp and a bad signature: refused with 401, the emulator's retries too; nothing changes.
    for fault, platform in (("stale_timestamp", "youtube"), ("bad_signature", "facebook")):
        emulator.reset()
        emulator.register_webhook(service.url + "/webhooks/ayrshare", secret=SECRET)
        emulator.set_knobs(webhook_retry_delays_ms=RETRY_DELAYS_MS, webhook_fault=fault)
        emulator.send_webhook("link", platform, ref_id=ref_id)
        attempts = emulator.wait_for_webhook_attempts(3)
        assert [(a["statusCode"], a["fault"]) for a in attempts] == [(401, fault)] * 3, fault
        assert len(deliveries(service)) == 1, fault
        assert internal_networks(service, "dana") == ["tiktok"], fault

    # The knob spent, the next delivery is accepted as usual.
    emulator.send_webhook("link", "youtube", ref_id=ref_id)
    receiver.wait_for(2)
    assert internal_networks(service, "dana") == ["tiktok", "youtube"]
    assert len(receiver.received) == 2


# -- b. restart and outage ----------------------------------------------------------------------------------------
def test_the_outbox_survives_an_outage_of_the_target_and_a_restart(start_service, emulator, database, migrated):
    from service.webhooks import Outbox

    port = free_port()  # the team's backend is down: nothing listens here
    forward_url = f"http://127.0.0.1:{port}{TEAM_PATH}"
    first = start_service(workers=2, **service_env(migrated, forward_url))
    ref_id = make_user(first, "dana")
    event_id = post_event(first, ref_id)["id"]

    [failed_once] = eventually(
        lambda: [d for d in deliveries(first, "pending") if d["attempts"] >= 1], what="the first failed attempt"
    )
    assert failed_once["id"] == event_id and failed_once["lastError"].startswith("unreachable")
    assert first.stop() == 0
    # On a slow machine the stop can outlast the first backoff (~5 s), and the first instance tries once more.
    [stopped] = Outbox(database, max_hours=72).list("pending", limit=10)

    with WebhookReceiver(path=TEAM_PATH, port=port) as receiver:  # the backend is back, on the same address
        second = start_service(workers=2, **service_env(migrated, forward_url))
        # The first backoff (~5 s after the failed attempt) runs out; then the new instance's deliverer sends it.
        [forwarded] = receiver.wait_for(1, timeout=20)
        payload = verified(forwarded)
        assert payload["id"] == event_id and payload["type"] == "account.linked" and payload["user"] == "dana"
        [delivered] = eventually(lambda: deliveries(second, "delivered"), what="the delivery settled")
        assert delivered["id"] == event_id and delivered["attempts"] == stopped.attempts  # failed ones only
        assert len(receiver.received) == 1


# -- c. two instances ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_two_instances_deliver_each_event_exactly_once(start_service, emulator, migrated, receiver):
    env = service_env(migrated, receiver.url)
    instances = [start_service(workers=2, **env) for _ in range(2)]
    ref_id = make_user(instances[0], "dana")
    ids = [post_event(instances[n % 2], ref_id, n=n)["id"] for n in range(20)]
    assert len(set(ids)) == 20

    receiver.wait_for(20, timeout=20)
    eventually(lambda: len(deliveries(instances[1], "delivered")) == 20, what="all 20 settled")
    time.sleep(1.5)  # more than a deliverer's poll interval: a second send would have started by now
    received = [request.header("webhook-id") for request in receiver.received]
    assert sorted(received) == sorted(ids)
    assert all(verified(request)["id"] == request.header("webhook-id") for request in receiver.received)


# -- d. WEBHOOK_DELIVERY=process -------------------------------------------------------------------------------
def test_under_process_delivery_only_flask_webhooks_deliver_sends(start_service, emulator, migrated, receiver):
    service = start_service(workers=2, **service_env(migrated, receiver.url, delivery="process"))
    ref_id = make_user(service, "dana")
    event_id = post_event(service, ref_id)["id"]

    time.sleep(2.5)  # more than two poll intervals of a deliverer thread, had one been started
    assert receiver.received == []
    [pending] = deliveries(service, "pending")
    assert pending["id"] == event_id and pending["attempts"] == 0

    delivering = flask_cli(service.env, "webhooks", "deliver", "--once")
    assert delivering.returncode == 0, delivering.stderr
    assert delivering.stdout.strip().splitlines()[-1] == "delivered 1"
    [forwarded] = receiver.wait_for(1)
    assert verified(forwarded)["id"] == event_id
    assert [d["id"] for d in deliveries(service, "delivered")] == [event_id]

    again = flask_cli(service.env, "webhooks", "deliver", "--once")
    assert again.returncode == 0 and again.stdout.strip().splitlines()[-1] == "delivered 0"
    assert len(receiver.received) == 1
    for secret in (FORWARD_SECRET, SECRET):
        assert secret not in delivering.stdout + delivering.stderr
