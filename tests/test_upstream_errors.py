"""Each way Ayrshare can fail maps to its documented status, with a body that says what to do and leaks nothing."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from service import create_app
from service.auth import signed_path
from service.config import load_settings
from service.errors import UpstreamTimeout
from service.upstream.transport import AyrshareTransport
from tests.conftest import API_KEY, SIGNING_SECRET
from tests.support.webhook_receiver import WebhookReceiver

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

JSON = {"Accept": "application/json"}

# (emulator fault, expected status, expected error code)
FAULTS = [
    ("429", 503, "upstream_rate_limited"),
    ("500", 503, "upstream_unavailable"),
    ("502", 503, "upstream_unavailable"),
    ("503", 503, "upstream_unavailable"),
    ("drop", 503, "upstream_unavailable"),
    ("malformed", 502, "upstream_malformed"),
    ("non_json", 502, "upstream_malformed"),
    ("missing_url", 502, "upstream_malformed"),
    ("missing_token", 502, "upstream_malformed"),
    ("unsigned", 502, "upstream_malformed"),
    ("expired", 502, "upstream_malformed"),
    ("foreign_host", 502, "upstream_malformed"),
    ("long_expiry", 502, "upstream_malformed"),
]
# A token signed with another key only exists in the jwt flow (a session answer carries no token).
SESSION_FAULTS = [fault for fault in FAULTS if fault[0] != "unsigned"]


@pytest.mark.parametrize(
    ("link_flow", "fault", "status", "code"),
    [("session", *fault) for fault in SESSION_FAULTS] + [("jwt", *fault) for fault in FAULTS],
    ids=[f"session-{f[0]}" for f in SESSION_FAULTS] + [f"jwt-{f[0]}" for f in FAULTS],
)
def test_upstream_fault_maps_to_its_status(client, emulator, link_flow, fault, status, code):
    emulator.set_knobs(fault=fault, fault_count=-1)
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)

    assert response.status_code == status
    assert response.json["error"]["code"] == code
    body = response.get_data(as_text=True)
    assert "eyJ" not in body and API_KEY not in body and emulator.origin not in body
    if status == 503:  # a 429 holds the link off for Ayrshare's 5-minute window; other outages are retried sooner
        assert 1 <= int(response.headers["Retry-After"]) <= (300 if fault == "429" else 60)
    assert emulator.calls() >= 1


def test_transient_5xx_is_retried_and_the_user_still_gets_a_link(client, emulator):
    emulator.set_knobs(fault="503", fault_count=1)
    response = client.get(signed_path("alice", SIGNING_SECRET))
    assert response.status_code == 302
    assert emulator.calls() == 2


def test_a_429_is_never_repeated_and_holds_the_user_off_across_instances(settings_env, emulator, redis_client):
    # 1,000 429s in 24 h suspend an Ayrshare profile: after one, no call for that link until the window has passed.
    emulator.set_knobs(fault="429", fault_count=-1)
    first, second = create_app(settings_env).test_client(), create_app(settings_env).test_client()
    answers = [client.get(signed_path("alice", SIGNING_SECRET), headers=JSON) for client in [first, second] * 20]
    assert {(a.status_code, a.json["error"]["code"]) for a in answers} == {(503, "upstream_rate_limited")}
    assert emulator.calls() == 1  # 40 requests on two "instances", one upstream 429
    assert 1 <= int(answers[-1].headers["Retry-After"]) <= 300  # what is left of the 5-minute window
    assert first.get(signed_path("bob", SIGNING_SECRET), headers=JSON).status_code == 503
    assert emulator.calls() == 2  # another profile is asked (and here refused) on its own


def test_a_429_hold_ends_with_the_reset_ayrshare_gives(settings_env, emulator, redis_client):
    from service.links.broker import _hold_in

    emulator.set_knobs(fault="429", fault_count=1)
    client = create_app(settings_env).test_client()
    assert client.get(signed_path("alice", SIGNING_SECRET), headers=JSON).status_code == 503
    (marker,) = [key for key in redis_client.keys("connect:link:v1:*:error")]
    _, held = client.application.extensions["link_store"].read_with_marker(marker.decode().removesuffix(":error"))
    assert 290 < redis_client.pttl(marker) / 1000 <= 300 and _hold_in(held) is not None
    redis_client.delete(marker)  # as if the window had passed
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    assert emulator.calls() == 2


def test_retries_never_run_past_the_request_deadline(settings_env, emulator):
    emulator.set_knobs(fault="hang", fault_count=-1)
    client = create_app(
        {
            **settings_env,
            "AYRSHARE_READ_TIMEOUT": "1.5",
            "AYRSHARE_CONNECT_TIMEOUT": "0.5",
            "AYRSHARE_DEADLINE_SECONDS": "2",
        }
    ).test_client()
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 504
    assert emulator.calls() == 1  # a second 1.5 s attempt could not finish inside the 2 s deadline


def test_upstream_that_does_not_answer_in_time_is_504(settings_env, emulator):
    emulator.set_knobs(fault="hang", fault_count=-1)
    client = create_app({**settings_env, "AYRSHARE_READ_TIMEOUT": "0.5"}).test_client()
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 504
    assert response.json["error"]["code"] == "upstream_timeout"


def test_wrong_api_key_names_the_setting_to_check(settings_env, emulator):
    client = create_app({**settings_env, "AYRSHARE_API_KEY": "not-the-registered-key"}).test_client()
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 502
    assert response.json["error"]["code"] == "bad_api_key"
    assert "AYRSHARE_API_KEY" in response.json["error"]["message"]
    assert "not-the-registered-key" not in response.get_data(as_text=True)


def test_link_from_a_host_outside_the_allowlist_is_never_served(settings_env, emulator):
    client = create_app({**settings_env, "LINK_ALLOWED_HOSTS": "profile.ayrshare.com"}).test_client()
    response = client.get(signed_path("alice", SIGNING_SECRET))
    assert response.status_code == 502
    assert "Location" not in response.headers


def test_a_failure_is_not_cached_and_the_next_request_recovers(client, emulator):
    emulator.set_knobs(fault="malformed", fault_count=1)
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 502
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 302


def test_an_answer_that_echoes_our_request_is_not_copied_into_errors_or_logs(capsys, client, emulator, keypair):
    emulator.set_knobs(fault="echo", fault_count=-1)
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)

    assert response.status_code == 502 and response.json["error"]["code"] == "upstream_refused"
    logs = capsys.readouterr().out
    assert '"ayrshare_code":null' in logs  # the refusal was logged (capture works), without the echoed code
    output = response.get_data(as_text=True) + logs
    pem_lines = [line for line in keypair["private_pem"].splitlines() if len(line) > 20]
    assert API_KEY not in output
    assert not any(line in output for line in pem_lines)


MALFORMED_REASONS = {
    "jwt": [
        ("unsigned", "token_not_ours"),
        ("expired", "token_expired"),
        ("long_expiry", "expiry_beyond_request"),
        ("foreign_host", "url_host_not_allowed"),
        ("missing_url", "missing_url"),
        ("non_json", "non_json"),
    ],
    "session": [
        ("missing_token", "missing_session_id"),
        ("expired", "link_expired"),
        ("long_expiry", "expiry_beyond_request"),
        ("foreign_host", "url_host_not_allowed"),
        ("missing_url", "missing_url"),
        ("non_json", "non_json"),
    ],
}


@pytest.mark.parametrize(
    ("link_flow", "fault", "reason"),
    [(flow, *case) for flow, cases in MALFORMED_REASONS.items() for case in cases],
)
def test_a_malformed_answer_is_logged_and_counted_with_what_was_wrong(
    capsys, client, emulator, link_flow, fault, reason
):
    emulator.set_knobs(fault=fault, fault_count=-1)
    assert client.get(signed_path("alice", SIGNING_SECRET), headers=JSON).status_code == 502
    lines = [line for line in capsys.readouterr().out.splitlines() if "ayrshare answer unusable" in line]
    assert len(lines) == 1 and f'"reason":"{reason}"' in lines[0]
    from prometheus_client import REGISTRY

    labels = {"flow": link_flow, "outcome": reason}
    assert REGISTRY.get_sample_value("ayrshare_connect_upstream_calls_total", labels) >= 1


def test_the_proxy_environment_is_read_once_and_honoured(settings_env, emulator, monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    with socket.socket() as probe:  # a port nobody listens on: a proxy that refuses every connection
        probe.bind(("127.0.0.1", 0))
        dead_proxy = f"http://127.0.0.1:{probe.getsockname()[1]}"
    with monkeypatch.context() as env:
        env.setenv("HTTP_PROXY", dead_proxy)
        through_proxy = create_app(settings_env).test_client()
        env.setenv("NO_PROXY", "127.0.0.1")
        bypassing = create_app(settings_env).test_client()
    # The environment is back to no proxy at all: the clients keep what they read at start.

    response = through_proxy.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 503 and response.json["error"]["code"] == "upstream_unavailable"
    assert emulator.calls() == 0
    assert bypassing.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    assert emulator.calls() == 1


@pytest.mark.parametrize("status", [302, 307, 308])
def test_a_redirect_from_ayrshare_is_never_followed(settings_env, status):
    # Followed, it would re-send the Profile-Key and X/Twitter headers, and on a 307/308 the body (in jwt: the private
    # key), to wherever the answer points.
    with WebhookReceiver(path="/api") as upstream:
        upstream.respond_with(status)
        client = create_app({**settings_env, "AYRSHARE_BASE_URL": upstream.url}).test_client()
        response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
        assert response.status_code == 502 and response.json["error"]["code"] == "upstream_malformed"
        assert [request.path.endswith("/moved") for request in upstream.received] == [False]  # one call, not two


@pytest.mark.parametrize(
    ("headers", "hold_seconds"),
    [
        ({"Retry-After": "0"}, 1),  # "now" still holds for a second: every 429 counts toward a suspension
        ({"x-ratelimit-reset": "1000"}, 300),  # a reset in 1970: our clocks disagree, so Ayrshare's 5-minute window
    ],
    ids=["retry now", "reset already past"],
)
def test_a_429_holds_the_link_off_for_what_ayrshare_says_or_its_window(
    settings_env, redis_client, headers, hold_seconds
):
    with WebhookReceiver(path="/api") as upstream:
        upstream.respond_with((429, headers))
        client = create_app({**settings_env, "AYRSHARE_BASE_URL": upstream.url}).test_client()
        response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
        (marker,) = redis_client.keys("connect:link:v1:*:error")  # before the receiver's shutdown: "now" lasts 1 s
        assert hold_seconds - 1 < redis_client.pttl(marker) / 1000 <= hold_seconds
    assert response.status_code == 503 and response.json["error"]["code"] == "upstream_rate_limited"
    assert response.headers["Retry-After"] == str(hold_seconds)


def test_an_answer_that_trickles_in_is_cut_at_the_deadline(settings_env):
    # Each byte arrives well within AYRSHARE_READ_TIMEOUT, so only the deadline can end the call.
    listener = socket.create_server(("127.0.0.1", 0))

    def trickle() -> None:
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        with contextlib.suppress(OSError):
            for _ in range(100):
                connection.sendall(b" ")
                time.sleep(0.2)
        connection.close()

    threading.Thread(target=trickle, daemon=True).start()
    slow = {
        "AYRSHARE_BASE_URL": f"http://127.0.0.1:{listener.getsockname()[1]}/api",
        "AYRSHARE_CONNECT_TIMEOUT": "0.5",
        "AYRSHARE_READ_TIMEOUT": "1",
        "AYRSHARE_DEADLINE_SECONDS": "2",
    }
    client = create_app({**settings_env, **slow}).test_client()
    started = time.monotonic()
    response = client.get(signed_path("alice", SIGNING_SECRET), headers=JSON)
    assert response.status_code == 504 and response.json["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 3.5  # the 2 s deadline and one read, not the 20 s the trickle lasts
    listener.close()


def test_a_call_with_no_time_left_is_never_sent_and_says_so(settings_env, emulator):
    """A 504 raised before any request left carries request_sent=False: a profile create that ends this way is known
    not to have created anything (provisioning releases its claim instead of keeping it as outcome_unknown)."""
    transport = AyrshareTransport(load_settings(settings_env))
    with pytest.raises(UpstreamTimeout) as caught:
        transport.call("POST", "/profiles/link-sessions", body={}, profile_key="pk", deadline=time.monotonic())
    assert caught.value.request_sent is False
    assert emulator.calls() == 0
