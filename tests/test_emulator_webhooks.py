"""The emulator's webhooks over real HTTP: registering, listing and unregistering, signed `social` deliveries to a
local receiver (signatures checked independently), retries with short delays, timeouts, secret rotation, the linking
page's buttons, the control endpoints, faults and counters."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from urllib.parse import urlsplit

import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.emulator_proc import EmulatorProcess
from tests.support.webhook_receiver import HANG, WebhookReceiver, signature_matches

DOMAIN = "ACME"
API_KEY = "API-KEY-PRIMARY"
FILE_KEY = "PROFILE-KEY-1"
PROFILES = {FILE_KEY: "Alice", "PROFILE-KEY-2": "Bob"}
SECRET = "s3cret-for-hmac"
RETRY_DELAYS = (0.2, 0.5)


@pytest.fixture(scope="module")
def public_key_path(tmp_path_factory):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path_factory.mktemp("keys") / "public.pem"
    path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return path


@pytest.fixture(scope="module")
def emulator_process(public_key_path):
    with EmulatorProcess(
        DOMAIN, public_key_path, [API_KEY], profiles=PROFILES, webhook_retry_delays=RETRY_DELAYS
    ) as process:
        yield process


@pytest.fixture
def emulator(emulator_process):
    emulator_process.reset()
    yield emulator_process
    emulator_process.reset()  # stops deliveries still retrying, so they cannot reach the next test's receiver


@pytest.fixture
def receiver():
    with WebhookReceiver() as receiver:
        yield receiver


def call(emulator, method, path, body=None, profile_key=None, api_key=API_KEY) -> requests.Response:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    if profile_key is not None:
        headers["Profile-Key"] = profile_key
    return requests.request(method, f"{emulator.base_url}{path}", json=body, headers=headers, timeout=10)


def assert_error(response, status, code=None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == "error" and body["action"] == "webhook" and isinstance(body["message"], str)
    if code is not None:
        assert body["code"] == code
    return body


def hex_hmac(secret: str, body: bytes) -> str:
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def ref_id(emulator, profile_key=FILE_KEY) -> str:
    return call(emulator, "GET", "/user", profile_key=profile_key).json()["refId"]


def press(page: requests.Response, network: str, op: str) -> requests.Response:
    """Submit the page's Link/Unlink form for `network` as a browser would (fields scraped from the HTML)."""
    form = re.search(
        rf'<li id="network-{network}".*?<form method="post" action="([^"]+)">(.*?)</form>', page.text, re.S
    )
    assert form, f"no form for {network}"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)))
    origin = f"{urlsplit(page.url).scheme}://{urlsplit(page.url).netloc}"
    return requests.post(f"{origin}{form.group(1)}", data={**fields, "op": op}, timeout=10)


def linking_page(emulator, profile_key=FILE_KEY) -> requests.Response:
    answer = call(emulator, "POST", "/profiles/link-sessions", {}, profile_key=profile_key)
    assert answer.status_code == 200, answer.text
    page = requests.get(answer.json()["url"], timeout=10)
    assert page.status_code == 200
    return page


# --- registering ---


def test_register_answers_the_documented_shape_and_lists_the_hook(emulator, receiver):
    response = call(emulator, "POST", "/hook/webhook", {"action": "social", "url": receiver.url, "secret": SECRET})
    assert response.status_code == 200, response.text
    assert response.json() == {
        "status": "success",
        "action": "social",
        "url": receiver.url,
        "refId": ref_id(emulator, None),
    }

    listed = call(emulator, "GET", "/hook/webhook").json()
    assert [(hook["action"], hook["url"]) for hook in listed["webhooks"]] == [("social", receiver.url)]
    registration = emulator.webhooks()["registrations"][0]
    assert registration["profile"] == "primary" and registration["secretSet"] is True
    assert SECRET not in json.dumps(emulator.webhooks())  # the control view never shows a secret


def test_a_user_profile_registers_its_own_hook_with_profile_key(emulator, receiver):
    answer = emulator.register_webhook(receiver.url, profile_key=FILE_KEY)
    assert answer["refId"] == ref_id(emulator)
    assert call(emulator, "GET", "/hook/webhook").json()["webhooks"] == []  # not the Primary Profile's
    assert len(call(emulator, "GET", "/hook/webhook", profile_key=FILE_KEY).json()["webhooks"]) == 1


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        {"action": "social"},
        {"action": "nope", "url": "https://example.com/hook"},
        {"action": "social", "url": "http://example.com/hook"},  # not https, not loopback
        {"action": "social", "url": "ftp://127.0.0.1/hook"},
        {"action": "social", "url": "https://"},
        {"action": "social", "url": "https://exa mple.com/"},
        {"action": "social", "url": "https://example.com:port/"},
        {"action": "social", "url": 42},
        {"action": "social", "url": "https://example.com/hook", "secret": 7},
    ],
)
def test_an_invalid_registration_is_refused(emulator, body):
    assert_error(call(emulator, "POST", "/hook/webhook", body), 400, 101)
    assert emulator.webhooks()["registrations"] == []


@pytest.mark.parametrize("url", ["https://example.com/hook", "http://127.0.0.1:9/hook", "http://localhost:9/x"])
def test_https_and_loopback_http_urls_are_accepted(emulator, url):
    assert emulator.register_webhook(url)["url"] == url


def test_register_needs_the_api_key_and_a_live_profile_key(emulator, receiver):
    body = {"action": "social", "url": receiver.url}
    assert_error(call(emulator, "POST", "/hook/webhook", body, api_key="WRONG"), 403, 102)
    assert_error(call(emulator, "POST", "/hook/webhook", body, api_key=None), 403, 102)
    assert_error(call(emulator, "POST", "/hook/webhook", body, profile_key="UNKNOWN"), 400, 101)
    assert emulator.webhooks()["registrations"] == []


def test_unregister_removes_the_hook_and_stops_deliveries(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    receiver.wait_for(1)

    answer = call(emulator, "DELETE", "/hook/webhook", {"action": "social"})
    assert answer.status_code == 200 and answer.json()["action"] == "social"
    assert call(emulator, "GET", "/hook/webhook").json()["webhooks"] == []
    with pytest.raises(RuntimeError, match="409"):
        emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    page = linking_page(emulator)
    press(page, "twitter", "link")
    time.sleep(0.5)
    assert len(receiver.received) == 1
    # Unregistering again (nothing registered) and an unknown action are refused.
    assert_error(call(emulator, "DELETE", "/hook/webhook", {"action": "social"}), 400, 101)
    assert_error(call(emulator, "DELETE", "/hook/webhook", {"action": "nope"}), 400, 101)


# --- deliveries ---


def test_delivery_is_signed_as_documented(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    before = int(time.time())
    sent = emulator.send_webhook("link", "linkedin", profile_key=FILE_KEY)
    (delivery,) = receiver.wait_for(1)

    assert delivery.method == "POST" and delivery.path == "/hooks/ayrshare"
    assert delivery.header("Content-Type") == "application/json"
    # Computed here from the documented scheme: HMAC-SHA256 of the raw body keyed by the secret, hex.
    assert delivery.header("X-Authorization-Content-SHA256") == hex_hmac(SECRET, delivery.body)
    assert before <= int(delivery.header("X-Authorization-Timestamp")) <= time.time() + 1
    assert delivery.header("X-Authorization-Content-SHA256-V2") is None  # no rotation, no second signature
    assert signature_matches(delivery, [SECRET]) and not signature_matches(delivery, ["other"])
    assert delivery.json() == sent["event"]
    assert delivery.json() == {
        "action": "social",
        "type": "link",
        "platform": "linkedin",
        "refId": ref_id(emulator),
        "title": "Alice",
        "source": "user",
    }
    (attempt,) = emulator.wait_for_webhook_attempts(1)
    assert attempt["ok"] is True and attempt["statusCode"] == 200 and attempt["attempt"] == 1
    assert attempt["deliveryId"] == sent["deliveryId"] and attempt["refId"] == ref_id(emulator)


def test_a_hook_without_secret_gets_unsigned_deliveries(emulator, receiver):
    emulator.register_webhook(receiver.url)
    emulator.send_webhook("unlink", "twitter", profile_key=FILE_KEY)
    (delivery,) = receiver.wait_for(1)
    assert delivery.header("X-Authorization-Content-SHA256") is None
    assert delivery.header("X-Authorization-Timestamp") is None


def test_a_failed_delivery_is_retried_twice_after_the_configured_delays(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    receiver.respond_with(500, 502, 500)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    first, second, third = receiver.wait_for(3)
    assert first.body == second.body == third.body  # the same event: receivers must be idempotent
    assert second.received_at - first.received_at >= RETRY_DELAYS[0] * 0.9
    assert third.received_at - second.received_at >= RETRY_DELAYS[1] * 0.9
    attempts = emulator.wait_for_webhook_attempts(3)
    assert [(a["attempt"], a["statusCode"], a["ok"]) for a in attempts] == [
        (1, 500, False),
        (2, 502, False),
        (3, 500, False),
    ]
    assert len({a["deliveryId"] for a in attempts}) == 1
    time.sleep(sum(RETRY_DELAYS))
    assert len(receiver.received) == 3  # two retries, then it gives up
    stats = emulator.stats()
    assert stats["webhook_events"] == 1 and stats["webhook_attempts"] == 3 and stats["webhook_failed_attempts"] == 3


def test_a_retry_that_succeeds_ends_the_delivery(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    receiver.respond_with(503)
    emulator.send_webhook("refresh", "facebook", profile_key=FILE_KEY)
    receiver.wait_for(2)
    time.sleep(RETRY_DELAYS[1] + 0.3)
    assert len(receiver.received) == 2
    assert [a["ok"] for a in emulator.webhook_attempts()] == [False, True]


def test_a_redirect_is_a_failed_delivery(emulator, receiver):
    emulator.register_webhook(receiver.url)
    receiver.respond_with(302, 302, 302)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    attempts = emulator.wait_for_webhook_attempts(3)
    assert [a["statusCode"] for a in attempts] == [302, 302, 302] and not any(a["ok"] for a in attempts)


def test_a_slow_receiver_times_out_and_is_recorded_as_503(emulator, receiver):
    emulator.set_knobs(webhook_timeout_ms=300, webhook_retry_delays_ms=[])
    emulator.register_webhook(receiver.url)
    receiver.respond_with(HANG)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    (attempt,) = emulator.wait_for_webhook_attempts(1)
    assert attempt["statusCode"] == 503 and attempt["error"] == "timeout" and attempt["ok"] is False


def test_an_unreachable_receiver_is_recorded_without_a_status(emulator):
    emulator.set_knobs(webhook_retry_delays_ms=[10])
    emulator.register_webhook("http://127.0.0.1:9/closed")
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    attempts = emulator.wait_for_webhook_attempts(2)
    assert [(a["statusCode"], a["ok"]) for a in attempts] == [(None, False), (None, False)]
    assert all(a["error"] for a in attempts)


def test_the_user_profiles_own_hook_wins_over_the_primary_profiles(emulator):
    with WebhookReceiver() as primary, WebhookReceiver() as own:
        emulator.register_webhook(primary.url, secret="primary-secret")
        emulator.register_webhook(own.url, secret="alice-secret", profile_key=FILE_KEY)
        emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
        emulator.send_webhook("link", "twitter", profile_key="PROFILE-KEY-2")  # Bob has no hook: the primary's
        (alice,) = own.wait_for(1)
        (bob,) = primary.wait_for(1)
        time.sleep(0.3)
        assert len(own.received) == 1 and len(primary.received) == 1
        assert alice.json()["title"] == "Alice" and bob.json()["title"] == "Bob"
        # Each delivery is signed with the secret of the profile whose hook received it.
        assert signature_matches(alice, ["alice-secret"]) and not signature_matches(alice, ["primary-secret"])
        assert signature_matches(bob, ["primary-secret"])


def test_the_linking_page_buttons_send_link_and_unlink_events(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    page = press(linking_page(emulator), "instagram", "link")
    (link,) = receiver.wait_for(1)
    entry = call(emulator, "GET", "/user", profile_key=FILE_KEY).json()["displayNames"][0]
    assert link.json() == {
        "action": "social",
        "type": "link",
        "platform": "instagram",
        "refId": ref_id(emulator),
        "title": "Alice",
        "displayName": entry["displayName"],
        "source": "user",
    }
    assert link.header("X-Authorization-Content-SHA256") == hex_hmac(SECRET, link.body)

    press(page, "instagram", "unlink")
    unlink = receiver.wait_for(2)[1].json()
    assert (unlink["type"], unlink["platform"], unlink["displayName"]) == ("unlink", "instagram", entry["displayName"])
    press(page, "instagram", "unlink")  # the stale page's button again: nothing was linked, nothing is sent
    time.sleep(0.3)
    assert len(receiver.received) == 2


def test_send_control_covers_refresh_and_an_unknown_ref_id(emulator, receiver):
    emulator.register_webhook(receiver.url, secret=SECRET)
    refresh = emulator.send_webhook("refresh", "youtube", profile_key=FILE_KEY)["event"]
    assert refresh["type"] == "refresh" and refresh["source"] == "system" and refresh["refreshBy"].endswith("Z")
    unknown = emulator.send_webhook(
        "unlink", "tiktok", ref_id="0" * 40, source="system", details={"message": "Token revoked"}
    )["event"]
    assert unknown == {
        "action": "social",
        "type": "unlink",
        "platform": "tiktok",
        "refId": "0" * 40,
        "source": "system",
        "details": {"message": "Token revoked"},
    }
    # Two events, two delivery threads: they may arrive in either order.
    bodies = sorted((received.json() for received in receiver.wait_for(2)), key=lambda body: body["type"])
    assert bodies == [refresh, unknown]


@pytest.mark.parametrize(
    "body",
    [
        {"type": "poke", "platform": "twitter", "profileKey": FILE_KEY},
        {"type": "link", "platform": "myspace", "profileKey": FILE_KEY},
        {"type": "link", "platform": "twitter", "profileKey": "UNKNOWN"},
        {"type": "link", "platform": "twitter"},
        {"type": "link", "platform": "twitter", "profileKey": FILE_KEY, "source": "robot"},
    ],
)
def test_send_control_refuses_a_bad_request(emulator, body):
    response = requests.post(f"{emulator.origin}/_emulator/webhooks/send", json=body, timeout=10)
    assert response.status_code == 400 and "error" in response.json()


# --- secret rotation ---


def test_rotation_signs_with_both_secrets_for_the_grace_window(emulator, receiver):
    emulator.register_webhook(receiver.url, secret="old-secret", profile_key=FILE_KEY)
    answer = emulator.rotate_webhook_secret("new-secret", profile_key=FILE_KEY)
    assert answer == {"status": "success", "action": "webhook", "refId": ref_id(emulator)}
    assert emulator.webhooks()["registrations"][0]["dualSigningUntil"] is not None

    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    (delivery,) = receiver.wait_for(1)
    # The documented header keeps the previous secret (a receiver not yet updated drops nothing); the second header
    # carries the new one.
    assert delivery.header("X-Authorization-Content-SHA256") == hex_hmac("old-secret", delivery.body)
    assert delivery.header("X-Authorization-Content-SHA256-V2") == hex_hmac("new-secret", delivery.body)
    assert signature_matches(delivery, ["new-secret"]) and signature_matches(delivery, ["old-secret"])


def test_after_the_grace_window_only_the_new_secret_signs(emulator, receiver):
    emulator.set_knobs(webhook_grace_seconds=1)
    emulator.register_webhook(receiver.url, secret="old-secret")
    emulator.rotate_webhook_secret("new-secret")
    time.sleep(1.1)
    emulator.send_webhook("link", "twitter", ref_id="f" * 40)
    (delivery,) = receiver.wait_for(1)
    assert delivery.header("X-Authorization-Content-SHA256") == hex_hmac("new-secret", delivery.body)
    assert delivery.header("X-Authorization-Content-SHA256-V2") is None
    assert emulator.webhooks()["registrations"][0]["dualSigningUntil"] is None


def test_a_first_secret_set_by_rotation_has_no_grace_window(emulator, receiver):
    emulator.register_webhook(receiver.url)
    emulator.rotate_webhook_secret("first-secret")
    emulator.send_webhook("link", "twitter", ref_id="f" * 40)
    (delivery,) = receiver.wait_for(1)
    assert delivery.header("X-Authorization-Content-SHA256") == hex_hmac("first-secret", delivery.body)
    assert delivery.header("X-Authorization-Content-SHA256-V2") is None


@pytest.mark.parametrize("body", [None, {}, {"secret": ""}, {"secret": 5}])
def test_rotation_needs_a_secret(emulator, body):
    assert_error(call(emulator, "POST", "/hook/webhook/secret", body), 400, 101)


# --- faults, counters, reset ---


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/hook/webhook", {"action": "social", "url": "https://example.com/hook"}),
        ("DELETE", "/hook/webhook", {"action": "social"}),
        ("GET", "/hook/webhook", None),
        ("POST", "/hook/webhook/secret", {"secret": "x"}),
    ],
)
def test_transport_faults_apply_to_every_webhook_endpoint(emulator, method, path, body):
    emulator.set_knobs(fault="500")
    response = call(emulator, method, path, body)
    assert response.status_code == 500 and response.json()["action"] == "webhook"
    assert emulator.stats()["faults_served"] == 1


def test_counters_rate_limit_and_reset(emulator, receiver):
    emulator.set_knobs(rate_limit_max=3)
    emulator.register_webhook(receiver.url, secret=SECRET)
    call(emulator, "GET", "/hook/webhook")
    emulator.rotate_webhook_secret("another")
    response = call(emulator, "GET", "/hook/webhook")
    assert_error(response, 429, 429)
    assert response.headers["x-ratelimit-max"] == "3"
    stats = emulator.stats()
    assert (stats["webhook_registers"], stats["webhook_lists"], stats["webhook_secret_rotations"]) == (1, 2, 1)

    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    emulator.wait_for_webhook_attempts(1)
    emulator.reset()
    assert emulator.webhooks() == {"registrations": [], "attempts": []}
    assert emulator.stats()["webhook_events"] == 0


def test_reset_stops_a_delivery_that_is_still_retrying(emulator, receiver):
    emulator.set_knobs(webhook_retry_delays_ms=[400, 400])
    emulator.register_webhook(receiver.url)
    receiver.respond_with(500, 500, 500)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    receiver.wait_for(1)
    emulator.reset()
    time.sleep(1.0)
    assert len(receiver.received) == 1 and emulator.webhook_attempts() == []


# --- the delivery-fault knob (webhook_fault) ---


def test_a_duplicate_delivery_sends_the_same_body_again_after_the_delivery(emulator, receiver):
    emulator.set_knobs(webhook_fault="duplicate")
    emulator.register_webhook(receiver.url, secret=SECRET)
    sent = emulator.send_webhook("link", "linkedin", profile_key=FILE_KEY)
    first, again = receiver.wait_for(2)
    assert first.body == again.body == json.dumps(sent["event"], separators=(",", ":")).encode()
    assert signature_matches(first, [SECRET]) and signature_matches(again, [SECRET])
    assert int(again.header("X-Authorization-Timestamp")) >= int(first.header("X-Authorization-Timestamp"))
    attempts = emulator.wait_for_webhook_attempts(2)
    assert [(a["attempt"], a["ok"], a["fault"]) for a in attempts] == [(1, True, None), (2, True, "duplicate")]
    assert {a["deliveryId"] for a in attempts} == {sent["deliveryId"]}
    # Armed for one delivery: the next event is sent once.
    emulator.send_webhook("unlink", "linkedin", profile_key=FILE_KEY)
    receiver.wait_for(3)
    time.sleep(0.3)
    assert len(receiver.received) == 3
    assert emulator.stats()["webhook_faults_served"] == 1
    assert emulator.knobs()["webhook_fault"] is None and emulator.knobs()["webhook_fault_count"] == 0


def test_a_duplicate_follows_the_retries_of_a_failed_delivery(emulator, receiver):
    emulator.set_knobs(webhook_fault="duplicate", webhook_retry_delays_ms=[50])
    emulator.register_webhook(receiver.url, secret=SECRET)
    receiver.respond_with(500)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    attempts = emulator.wait_for_webhook_attempts(3)
    assert [(a["attempt"], a["statusCode"], a["fault"]) for a in attempts] == [
        (1, 500, None),
        (2, 200, None),
        (3, 200, "duplicate"),
    ]
    assert len({received.body for received in receiver.wait_for(3)}) == 1


def test_a_stale_timestamp_dates_every_attempt_an_hour_back(emulator, receiver):
    emulator.set_knobs(webhook_fault="stale_timestamp")
    emulator.register_webhook(receiver.url, secret=SECRET)
    receiver.respond_with(401, 401, 401)  # what a verifying receiver answers
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    deliveries = receiver.wait_for(3)
    for delivery in deliveries:
        age = delivery.received_at - int(delivery.header("X-Authorization-Timestamp"))
        assert 3599 <= age <= 3602
        assert delivery.header("X-Authorization-Content-SHA256") == hex_hmac(SECRET, delivery.body)  # still signed
    attempts = emulator.wait_for_webhook_attempts(3)
    assert [(a["statusCode"], a["fault"]) for a in attempts] == [(401, "stale_timestamp")] * 3


def test_a_bad_signature_signs_every_attempt_with_an_unknown_secret(emulator, receiver):
    emulator.set_knobs(webhook_fault="bad_signature", webhook_grace_seconds=60)
    emulator.register_webhook(receiver.url, secret="old-secret")
    emulator.rotate_webhook_secret(SECRET)  # both headers are sent, and both are wrong
    receiver.respond_with(401, 401, 401)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    deliveries = receiver.wait_for(3)
    for delivery in deliveries:
        assert delivery.header("X-Authorization-Content-SHA256")
        assert delivery.header("X-Authorization-Content-SHA256-V2")
        assert not signature_matches(delivery, [SECRET, "old-secret"])
        assert abs(delivery.received_at - int(delivery.header("X-Authorization-Timestamp"))) <= 2  # a fresh time
    attempts = emulator.wait_for_webhook_attempts(3)
    assert [(a["statusCode"], a["fault"]) for a in attempts] == [(401, "bad_signature")] * 3


def test_an_unsigned_hook_gets_the_faulty_headers_too(emulator, receiver):
    emulator.set_knobs(webhook_fault="bad_signature", webhook_fault_count=2)
    emulator.register_webhook(receiver.url)
    emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    (signed,) = receiver.wait_for(1)
    assert signed.header("X-Authorization-Content-SHA256") and signed.header("X-Authorization-Timestamp")
    emulator.set_knobs(webhook_fault="stale_timestamp")
    emulator.send_webhook("link", "tiktok", profile_key=FILE_KEY)
    stale = receiver.wait_for(2)[1]
    assert stale.header("X-Authorization-Content-SHA256") is None
    assert stale.received_at - int(stale.header("X-Authorization-Timestamp")) >= 3599


def test_the_webhook_fault_count_counts_deliveries(emulator, receiver):
    emulator.set_knobs(webhook_fault="bad_signature", webhook_fault_count=2)
    with pytest.raises(RuntimeError, match="409"):  # no hook yet: nothing delivered, nothing consumed
        emulator.send_webhook("link", "twitter", profile_key=FILE_KEY)
    assert emulator.knobs()["webhook_fault_count"] == 2
    emulator.register_webhook(receiver.url, secret=SECRET)
    for platform in ("twitter", "tiktok", "linkedin"):
        emulator.send_webhook("link", platform, profile_key=FILE_KEY)
        receiver.wait_for(len(receiver.received) + 1)
    signed = {received.json()["platform"]: signature_matches(received, [SECRET]) for received in receiver.received}
    assert signed == {"twitter": False, "tiktok": False, "linkedin": True}
    assert emulator.stats()["webhook_faults_served"] == 2

    emulator.set_knobs(webhook_fault="duplicate", webhook_fault_count=-1)
    for _ in range(3):
        emulator.send_webhook("refresh", "facebook", profile_key=FILE_KEY)
    receiver.wait_for(3 + 6)
    assert emulator.knobs()["webhook_fault"] == "duplicate"  # every delivery until reset
    emulator.set_knobs(webhook_fault=None)
    assert emulator.knobs()["webhook_fault_count"] == 0


@pytest.mark.parametrize(
    "knobs",
    [
        {"webhook_fault": "replay"},
        {"webhook_fault": "duplicate", "webhook_fault_count": -2},
        {"webhook_fault_count": "1"},
        {"webhook_fault": "bad_signature", "webhook_fault_count": True},
    ],
)
def test_bad_webhook_fault_knobs_are_refused(emulator, knobs):
    response = requests.post(f"{emulator.origin}/_emulator/knobs", json=knobs, timeout=10)
    assert response.status_code == 400 and "webhook_fault" in response.json()["error"]
    assert emulator.knobs()["webhook_fault"] is None


def test_reset_disarms_the_webhook_fault(emulator):
    emulator.set_knobs(webhook_fault="stale_timestamp", webhook_fault_count=-1)
    emulator.reset()
    assert (emulator.knobs()["webhook_fault"], emulator.knobs()["webhook_fault_count"]) == (None, 0)
