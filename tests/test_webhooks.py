"""Ayrshare webhooks in (signature, timestamp, idempotency, the directory) and passed on through the outbox."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from datetime import timedelta
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select
from standardwebhooks.webhooks import Webhook

from service import create_app
from service.auth import signed_path
from service.profiles.directory import utcnow
from service.webhooks import DeliveryWorker, Forwarder, Outbox
from service.webhooks.models import WebhookEvent
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET, ayrshare_webhook_headers
from tests.support.webhook_receiver import WebhookReceiver

AUTH = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
SECRET = "ayrshare-webhook-secret-0001"
OLD_SECRET = "ayrshare-webhook-secret-0000"
FORWARD_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def receiver():
    with WebhookReceiver() as server:
        yield server


@pytest.fixture
def make_app(settings_env, database):
    apps = []

    def make(**overrides):
        env = {
            **settings_env,
            "DATABASE_URL": database.engine.url.render_as_string(hide_password=False),
            "AYRSHARE_WEBHOOK_SECRET": f"{SECRET},{OLD_SECRET}",
            "WEBHOOK_DELIVERY": "process",  # tests drive delivery themselves
            **overrides,
        }
        app = create_app(env)
        app.config["TESTING"] = True
        apps.append(app)
        return app

    yield make
    for app in apps:
        worker = app.extensions.get("webhook_worker")
        if worker is not None:
            worker.stop()


def social(kind: str = "link", platform: str = "linkedin", ref_id: str | None = None, **extra) -> bytes:
    event = {"action": "social", "type": kind, "platform": platform, "refId": ref_id or REF, "title": "Dana", **extra}
    return json.dumps(event).encode()


def signed_headers(body: bytes, secret: str = SECRET, at: float | None = None, header="X-Authorization-Content-SHA256"):
    return ayrshare_webhook_headers(body, secret, at, header)


def post(client, body: bytes, headers: dict):
    return client.post("/webhooks/ayrshare", data=body, headers=headers)


def events(database) -> int:
    with database.engine.connect() as connection:
        return connection.execute(select(func.count()).select_from(WebhookEvent)).scalar()


def make_dana(app) -> str:
    """Dana gets a real profile at the emulator; social events name its refId."""
    created = app.test_client().post("/internal/v1/users/dana/profile", headers=AUTH)
    assert created.status_code == 201, created.json
    global REF
    REF = created.json["refId"]
    return REF


REF = "unset"


@pytest.fixture
def app(make_app, emulator):
    app = make_app()
    make_dana(app)
    return app


# -- verification ----------------------------------------------------------------------------------------------
def test_a_signed_link_event_is_accepted_and_recorded_once(app, database):
    client = app.test_client()
    body = social()
    first = post(client, body, signed_headers(body))
    assert first.status_code == 200 and first.json["status"] == "accepted" and first.json["id"].startswith("evt_")
    again = post(client, body, signed_headers(body))  # Ayrshare's retry: same body, a new timestamp
    assert again.status_code == 200 and again.json["status"] == "duplicate"
    assert events(database) == 1


@pytest.mark.parametrize(
    "mangle, reason",
    [
        (lambda body, h: {**h, "X-Authorization-Content-SHA256": "0" * 64}, "bad signature"),
        (lambda body, h: {k: v for k, v in h.items() if "SHA256" not in k}, "missing signature"),
        (lambda body, h: {k: v for k, v in h.items() if "Timestamp" not in k}, "missing timestamp"),
        (lambda body, h: signed_headers(body, at=time.time() - 360), "stale"),
        (lambda body, h: {**h, "X-Authorization-Timestamp": "nan"}, "not a number"),
        (lambda body, h: {**h, "X-Authorization-Timestamp": "inf"}, "infinite"),
        (lambda body, h: signed_headers(body, at=time.time() + 360), "from the future"),
        (lambda body, h: signed_headers(body, secret="someone-else-secret-01"), "another secret"),
        (lambda body, h: signed_headers(body + b" "), "another body"),
    ],
)
def test_a_bad_delivery_is_401_and_touches_nothing(app, database, mangle, reason):
    body = social()
    response = post(app.test_client(), body, mangle(body, signed_headers(body)))
    assert response.status_code == 401, reason
    assert response.json["error"]["code"] == "bad_webhook_signature"
    assert events(database) == 0
    record = app.test_client().get("/internal/v1/users/dana", headers=AUTH).json
    assert record["linkedNetworks"] is None


def test_events_in_the_same_millisecond_keep_their_order(app, database, monkeypatch):
    from service.webhooks import receiver

    # Ids are "evt_<ms><random>", so within one millisecond they sort by chance: here the first sorts last.
    start = utcnow().replace(microsecond=0)
    moments = iter(start + timedelta(microseconds=n) for n in range(1, 100))
    randoms = iter(["ffffffffffff", "000000000000", "777777777777"])
    monkeypatch.setattr(receiver, "utcnow", lambda: next(moments))
    monkeypatch.setattr(receiver, "secrets", SimpleNamespace(token_hex=lambda n: next(randoms)))
    client = app.test_client()
    link, unlink = social(kind="link"), social(kind="unlink")
    outcomes = [post(client, body, signed_headers(body)).json["status"] for body in (link, unlink, link)]
    assert outcomes == ["accepted", "accepted", "accepted"]  # linked again, not a repeat of the first link
    assert events(database) == 3


def test_the_duplicate_check_reads_one_index_entry_not_the_whole_table(database):
    """Every delivery looks up its profile and network's latest event, and the table is never pruned."""
    from service.webhooks.receiver import latest_event

    query = latest_event("ref-1", "linkedin").compile(database.engine, compile_kwargs={"literal_binds": True})
    with database.engine.begin() as connection:
        if database.dialect == "sqlite":
            plan = " | ".join(row[-1] for row in connection.exec_driver_sql(f"EXPLAIN QUERY PLAN {query}"))
        else:  # a near-empty table is cheaper to scan; forbid that to see whether the index serves the query
            connection.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = " | ".join(row[0] for row in connection.exec_driver_sql(f"EXPLAIN {query}"))
    assert "ix_webhook_events_latest" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan  # read in order from the index, not sorted


def test_the_same_event_later_is_new_not_a_duplicate(app, database, monkeypatch):
    from service.webhooks import receiver

    client = app.test_client()
    link, unlink, refresh = social(kind="link"), social(kind="unlink"), social(kind="refresh")
    for body in (link, unlink, link):  # linked, unlinked, linked again: three events
        assert post(client, body, signed_headers(body)).json["status"] == "accepted"
    assert post(client, link, signed_headers(link)).json["status"] == "duplicate"  # Ayrshare's retry of the last
    assert post(client, refresh, signed_headers(refresh)).json["status"] == "accepted"
    monkeypatch.setattr(receiver, "DUPLICATE_WINDOW_SECONDS", 0)  # the same refresh days later is a new one
    assert post(client, refresh, signed_headers(refresh)).json["status"] == "accepted"
    assert events(database) == 5
    assert app.test_client().get("/internal/v1/users/dana", headers=AUTH).json["state"] == "active"


def test_the_previous_secret_and_the_rotation_header_both_verify(app):
    client = app.test_client()
    old = social(platform="facebook")
    assert post(client, old, signed_headers(old, secret=OLD_SECRET)).json["status"] == "accepted"
    rotated = social(platform="twitter")
    headers = {
        **signed_headers(rotated, secret="not-ours-any-more-0"),
        **signed_headers(rotated, header="X-Authorization-Content-SHA256-V2"),
    }
    assert post(client, rotated, headers).json["status"] == "accepted"


def test_unknown_ref_ids_and_other_actions_are_acknowledged(app, database):
    client = app.test_client()
    unknown = social(ref_id="ref-nobody")
    assert post(client, unknown, signed_headers(unknown)).json["status"] == "unknown_ref_id"
    other = json.dumps({"action": "post", "status": "success"}).encode()
    assert post(client, other, signed_headers(other)).json["status"] == "ignored"


def test_a_signed_but_malformed_event_is_400(app, database):
    body = json.dumps({"action": "social", "type": "explode", "platform": "x", "refId": "r"}).encode()
    response = post(app.test_client(), body, signed_headers(body))
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_webhook_body"
    assert events(database) == 0


def test_without_a_webhook_secret_the_endpoint_is_off(make_app):
    app = make_app(AYRSHARE_WEBHOOK_SECRET="")
    body = social()
    assert post(app.test_client(), body, signed_headers(body)).status_code == 404


# -- the directory and the links ---------------------------------------------------------------------------------
def test_link_and_unlink_update_known_networks_and_drop_cached_links(app, emulator):
    client = app.test_client()
    assert client.get("/internal/v1/users/dana/accounts", headers=AUTH).json["networks"] == []
    assert client.get(signed_path("dana", SIGNING_SECRET, 300)).status_code == 302
    calls = emulator.calls()
    body = social(kind="link", platform="linkedin")
    post(client, body, signed_headers(body))
    assert client.get("/internal/v1/users/dana", headers=AUTH).json["linkedNetworks"] == ["linkedin"]
    assert client.get(signed_path("dana", SIGNING_SECRET, 300)).status_code == 302
    assert emulator.calls() == calls + 1  # the cached link was dropped: a fresh one
    body = social(kind="unlink", platform="linkedin")
    post(client, body, signed_headers(body))
    assert client.get("/internal/v1/users/dana", headers=AUTH).json["linkedNetworks"] == []


# -- passing events on ---------------------------------------------------------------------------------------------
def queue_event(database, event_id: str, give_up_at=None) -> None:
    """An accepted event waiting in the outbox, due now."""
    now = utcnow()
    with database.begin() as session:
        session.add(
            WebhookEvent(
                id=event_id,
                body_sha256=hashlib.sha256(event_id.encode()).hexdigest(),
                dedupe_key=event_id,
                received_at=now,
                action="social",
                kind="link",
                network="x",
                ref_id="r",
                user_id="dana",
                forward_state="pending",
                attempts=0,
                next_attempt_at=now,
                give_up_at=give_up_at or now + timedelta(hours=1),
            )
        )


def test_events_are_forwarded_signed_per_standard_webhooks(make_app, emulator, receiver):
    app = make_app(WEBHOOK_FORWARD_URL=receiver.url, WEBHOOK_FORWARD_SECRET=FORWARD_SECRET)
    client = app.test_client()
    make_dana(app)
    body = social(kind="link", platform="tiktok")
    event_id = post(client, body, signed_headers(body)).json["id"]
    assert app.extensions["webhook_worker"].run_once() == 1
    [delivered] = receiver.wait_for(1)
    payload = Webhook(FORWARD_SECRET).verify(delivered.body, delivered.headers)
    assert payload["id"] == event_id == delivered.header("webhook-id")
    assert payload["type"] == "account.linked" and payload["user"] == "dana" and payload["network"] == "tiktok"
    assert payload["occurredAt"].endswith("Z")
    assert app.extensions["webhook_worker"].run_once() == 0  # delivered once
    [listed] = client.get("/internal/v1/webhooks/deliveries?state=delivered", headers=AUTH).json["deliveries"]
    assert listed["id"] == event_id and listed["attempts"] == 0


def test_an_outage_of_the_target_is_retried_with_backoff_then_fails_visibly(database, receiver):
    now = utcnow()
    queue_event(database, "evt_outage", give_up_at=now + timedelta(seconds=30))
    outbox = Outbox(database, max_hours=24)
    worker = DeliveryWorker(outbox, Forwarder(receiver.url, FORWARD_SECRET))
    receiver.respond_with(500, 503)
    assert worker.run_once() == 0
    first = outbox.get("evt_outage")
    assert first.state == "pending" and first.attempts == 1 and first.last_error == "HTTP 500"
    assert 5 <= (first.next_attempt_at - now).total_seconds() <= 7
    assert worker.run_once() == 0  # not due yet: no second request
    assert len(receiver.received) == 1
    clock = [now + timedelta(seconds=8)]
    outbox.clock = lambda: clock[0]
    assert worker.run_once() == 0
    second = outbox.get("evt_outage")
    assert second.attempts == 2 and 10 <= (second.next_attempt_at - clock[0]).total_seconds() <= 13
    clock[0] += timedelta(seconds=40)  # past give_up_at
    receiver.respond_with(500)
    worker.run_once()
    assert outbox.get("evt_outage").state == "failed"
    assert [d.id for d in outbox.list("failed", 10)] == ["evt_outage"]
    outbox.clock = utcnow
    assert outbox.retry("evt_outage").state == "pending"
    assert worker.run_once() == 1 and outbox.get("evt_outage").state == "delivered"


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_not_followed(database, receiver, status):
    # Followed, a 301-303 would turn into a GET whose 200 counted the event as delivered though nobody received it.
    queue_event(database, "evt_moved", give_up_at=utcnow() + timedelta(hours=1))
    outbox = Outbox(database, max_hours=24)
    receiver.respond_with(status)
    assert DeliveryWorker(outbox, Forwarder(receiver.url, FORWARD_SECRET)).run_once() == 0
    pending = outbox.get("evt_moved")
    assert pending.state == "pending" and pending.last_error == f"HTTP {status}"
    assert [r.method for r in receiver.received] == ["POST"]


def test_two_deliverers_send_each_event_once(database, receiver):
    for index in range(30):
        queue_event(database, f"evt_{index:04d}")
    workers = [DeliveryWorker(Outbox(database, 24), Forwarder(receiver.url, FORWARD_SECRET)) for _ in range(2)]
    threads = [threading.Thread(target=lambda w=w: [w.run_once() for _ in range(5)]) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [request.header("webhook-id") for request in receiver.received]
    assert sorted(ids) == [f"evt_{index:04d}" for index in range(30)]


def test_deliveries_api_validates_and_retries(make_app, receiver):
    app = make_app(WEBHOOK_FORWARD_URL=receiver.url, WEBHOOK_FORWARD_SECRET=FORWARD_SECRET)
    client = app.test_client()
    assert client.get("/internal/v1/webhooks/deliveries?state=lost", headers=AUTH).json["error"]["code"] == "bad_state"
    assert client.post("/internal/v1/webhooks/deliveries/evt_nope/retry", headers=AUTH).status_code == 404
    for query in ("after=%00", "limit=%C2%B2", "limit=0"):
        assert client.get(f"/internal/v1/webhooks/deliveries?{query}", headers=AUTH).status_code == 400, query
    assert client.get("/internal/v1/webhooks/deliveries").status_code == 401


def test_no_secret_reaches_a_log_line_or_an_answer(app, caplog):
    import logging

    caplog.set_level(logging.DEBUG)
    client = app.test_client()
    body = social()
    answers = [post(client, body, signed_headers(body)), post(client, body, signed_headers(body, secret="x" * 20))]
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records) + "".join(
        a.get_data(True) for a in answers
    )
    key = client.get("/internal/v1/users/dana", headers=AUTH).json["profileKey"]
    for secret in (SECRET, OLD_SECRET, key, hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()):
        assert secret not in text


def test_a_deliverer_that_exits_mid_send_gives_its_lease_back(database, receiver):
    queue_event(database, "evt_exiting")
    outbox = Outbox(database, max_hours=24)
    worker = DeliveryWorker(outbox, Forwarder(receiver.url, FORWARD_SECRET))
    owner, [held] = outbox.claim_due(limit=1)
    worker._holding = (held.id, owner)  # as run_once leaves it while the send is under way
    assert outbox.claim_due(limit=1)[1] == []  # leased: nobody else may send it
    worker.release_held()  # what the process's atexit hook does
    assert [d.id for d in outbox.claim_due(limit=1)[1]] == ["evt_exiting"]
