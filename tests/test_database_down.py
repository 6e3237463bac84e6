"""The database goes away: known users keep their links, everything else that needs it answers 503 and says so."""

from __future__ import annotations

import json
import sqlite3
import time
import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service import create_app
from service.auth import signed_path
from service.profiles import Database
from tests.conftest import INTERNAL_TOKEN, PROFILES, SIGNING_SECRET, ayrshare_webhook_headers
from tests.support.tcp_proxy import TcpProxy

AUTH = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
JSON = {"Accept": "application/json"}


@pytest.fixture
def proxied(postgres_url):
    """A fresh, migrated PostgreSQL database reached through a TCP proxy the test can cut."""
    database = Database(postgres_url)
    database.upgrade()
    database.engine.dispose()
    url = make_url(postgres_url)
    proxy = TcpProxy(url.host, url.port)
    yield proxy, url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    proxy.close()


def test_a_known_user_keeps_connecting_while_the_database_is_down(settings_env, emulator, proxied):
    proxy, url = proxied
    app = create_app({**settings_env, "DATABASE_URL": url})
    client = app.test_client()
    created = client.post("/internal/v1/users/dbdown-known/profile", headers=AUTH)
    assert created.status_code in (200, 201), created.json
    link = signed_path("dbdown-known", SIGNING_SECRET, 300)
    assert client.get(link).status_code == 302  # the lookup and the link are now cached

    proxy.cut()
    assert client.get(link).status_code == 302  # a fresh lookup entry: no database needed
    app.extensions["connect"].profiles.cache.fresh_seconds = 0  # every entry stale: the database is asked first
    assert client.get(link).status_code == 302  # ...and when it cannot answer, the stale entry serves

    other = client.get(signed_path("dbdown-unknown", SIGNING_SECRET, 300), headers=JSON)
    assert other.status_code == 503 and other.json["error"]["code"] == "database_unavailable"
    assert other.headers["Retry-After"].isdigit()
    listing = client.get("/internal/v1/users", headers=AUTH)
    assert listing.status_code == 503 and listing.json["error"]["code"] == "database_unavailable"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json["checks"]["database"] == "failing"
    assert ready.json["error"]["code"] == "database_unreachable"
    assert url.split("@")[-1] not in other.get_data(as_text=True)  # no database address in an answer

    proxy.restore()
    assert client.get("/internal/v1/users", headers=AUTH).status_code == 200  # the pool reconnects by itself
    assert client.get("/readyz").status_code == 200


@pytest.fixture
def postgres_app(settings_env, emulator, postgres_url):
    database = Database(postgres_url)
    database.upgrade()
    database.engine.dispose()
    app = create_app({**settings_env, "DATABASE_URL": postgres_url})
    yield app, database
    app.extensions["database"].engine.dispose()
    database.engine.dispose()


def test_a_table_locked_by_someone_else_is_a_503_within_seconds_not_a_hang(postgres_app):
    from service.profiles.database import LOCK_TIMEOUT_MS

    app, database = postgres_app
    with database.engine.connect() as holder:  # a migration or an admin session holding the table
        holder.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        started = time.monotonic()
        answer = app.test_client().get("/internal/v1/users", headers=AUTH)
        waited = time.monotonic() - started
        holder.rollback()
    assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable"
    assert LOCK_TIMEOUT_MS / 1000 <= waited < LOCK_TIMEOUT_MS / 1000 + 3
    assert app.test_client().get("/internal/v1/users", headers=AUTH).status_code == 200  # the lock gone: served


def test_a_sqlite_file_locked_by_another_writer_is_a_503_within_seconds(settings_env, emulator, tmp_path):
    """A write waits SQLITE_BUSY_TIMEOUT_SECONDS for another writer (a backup, an admin's shell), then answers 503 so
    that Ayrshare, which waits 10 s for a webhook's answer, sends it again."""
    from service.profiles.database import SQLITE_BUSY_TIMEOUT_SECONDS

    path = tmp_path / "ayrshare-connect.db"
    env = {**settings_env, "DATABASE_URL": f"sqlite:///{path}", "AYRSHARE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    Database(env["DATABASE_URL"]).upgrade()
    client = create_app(env).test_client()
    ref_id = client.post("/internal/v1/users/locked-user/profile", headers=AUTH).json["refId"]
    body = json.dumps({"action": "social", "type": "link", "platform": "linkedin", "refId": ref_id})
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # the write lock, held
        started = time.monotonic()
        refused = post_webhook(client, body)
        waited = time.monotonic() - started
    finally:
        holder.close()
    assert refused.status_code == 503 and refused.json["error"]["code"] == "database_unavailable", refused.json
    assert SQLITE_BUSY_TIMEOUT_SECONDS <= waited < 9  # answered inside Ayrshare's 10 s
    accepted = post_webhook(client, body)
    assert accepted.status_code == 200 and accepted.json["status"] == "accepted"  # the lock gone: recorded


def test_every_pooled_connection_in_use_is_a_503_not_a_500(postgres_app):
    from service.profiles.database import POOL_OVERFLOW, POOL_SIZE

    app, _ = postgres_app
    engine = app.extensions["database"].engine
    held = [engine.connect() for _ in range(POOL_SIZE + POOL_OVERFLOW)]
    try:
        answer = app.test_client().get("/internal/v1/users", headers=AUTH)
        assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable"
        assert app.test_client().get("/readyz").json["checks"]["database"] == "failing"
    finally:
        for connection in held:
            connection.close()
    assert app.test_client().get("/internal/v1/users", headers=AUTH).status_code == 200


def test_the_timeouts_keep_the_options_a_database_url_carries(postgres_url):
    url = make_url(postgres_url).update_query_dict({"options": "-c search_path=custom,public"})
    database = Database(url.render_as_string(hide_password=False))
    with database.engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW search_path").scalar() == "custom,public"
        assert connection.exec_driver_sql("SHOW lock_timeout").scalar() == "2s"
    database.engine.dispose()


WEBHOOK_SECRET = "ayrshare-webhook-secret-ro01"


@pytest.fixture
def own_database(postgres_server):
    """A fresh, migrated database of the suite's own server, which a test may turn read-only (ALTER DATABASE)."""
    if postgres_server is None:
        pytest.skip("DATABASE_URL is used as is: turning it read-only needs the suite's own server")
    name = f"test_ro_{uuid.uuid4().hex[:12]}"
    url = postgres_server.create_database(name)
    database = Database(url)
    database.upgrade()
    database.engine.dispose()

    def read_only(on: bool, terminate: bool = True) -> None:
        """As after a failover to a standby: writes refused; `terminate` ends the sessions so new ones see it."""
        with postgres_server.connect() as admin:
            setting = "SET default_transaction_read_only = on" if on else "RESET default_transaction_read_only"
            admin.execute(f'ALTER DATABASE "{name}" {setting}')
            if terminate:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,),
                )

    yield url, read_only
    postgres_server.drop_database(name)


def post_webhook(client, body: str):
    return client.post("/webhooks/ayrshare", data=body, headers=ayrshare_webhook_headers(body.encode(), WEBHOOK_SECRET))


def test_a_read_only_database_refuses_writes_with_503_and_loses_no_webhook(settings_env, emulator, own_database):
    url, read_only = own_database
    env = {**settings_env, "DATABASE_URL": url, "PROFILE_AUTO_CREATE": "true"}
    client = create_app({**env, "AYRSHARE_WEBHOOK_SECRET": WEBHOOK_SECRET}).test_client()
    created = client.post("/internal/v1/users/ro-known/profile", headers=AUTH)
    assert created.status_code == 201, created.json
    link = signed_path("ro-known", SIGNING_SECRET, 300)
    assert client.get(link).status_code == 302
    creates = emulator.profile_stats()["creates"]

    read_only(True)
    assert client.get(link).status_code == 302  # reads still work: known users keep connecting
    assert client.get("/internal/v1/users", headers=AUTH).status_code == 200
    for answer in [
        client.get(signed_path("ro-new", SIGNING_SECRET, 300), headers=JSON),  # first connect: the claim is a write
        client.put("/internal/v1/users/ro-put", json={"profileKey": PROFILES["alice"]}, headers=AUTH),
        client.delete("/internal/v1/users/ro-known", headers=AUTH),
    ]:
        assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable", answer.json
        assert "refuses writes" in answer.json["error"]["message"] and answer.headers["Retry-After"].isdigit()
    assert emulator.profile_stats()["creates"] == creates  # no claim, so no profile paid for
    body = json.dumps({"action": "social", "type": "link", "platform": "linkedin", "refId": created.json["refId"]})
    refused = post_webhook(client, body)
    assert refused.status_code == 503  # not recorded, so not acknowledged: Ayrshare sends it again

    read_only(False, terminate=False)  # the primary is back; the pool must not keep its read-only sessions
    retried = post_webhook(client, body)
    assert retried.status_code == 200 and retried.json["status"] == "accepted"
    assert client.get(signed_path("ro-new", SIGNING_SECRET, 300)).status_code == 302


def test_a_database_turned_read_only_while_ayrshare_creates_leaves_the_claim_for_an_operator(
    settings_env, emulator, own_database, monkeypatch, capsys
):
    url, read_only = own_database
    app = create_app({**settings_env, "DATABASE_URL": url, "PROFILE_AUTO_CREATE": "true"})
    client = app.extensions["users"].provisioner.client
    create_profile = client.create_profile

    def failover_after_the_answer(*args, **kwargs):
        created = create_profile(*args, **kwargs)  # the real call: Ayrshare has made the profile
        read_only(True)
        return created

    monkeypatch.setattr(client, "create_profile", failover_after_the_answer)
    capsys.readouterr()
    answer = app.test_client().get(signed_path("ro-half", SIGNING_SECRET, 300), headers=JSON)
    assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable", answer.json
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    [logged] = [line for line in lines if line["msg"].startswith("profile created at Ayrshare but")]
    assert logged["user"] == "ro-half" and logged["ref_id"]  # what the operator looks for in the dashboard
    assert not [line for line in lines if line["level"] == "error" and "exc" in line]  # no traceback: not a bug
    read_only(False)
    pending = app.extensions["users"].directory.pending()
    assert [(record.user, record.state) for record in pending] == [("ro-half", "pending")]
    assert emulator.profile_stats()["creates"] == 1


def test_a_stored_key_whose_commit_answer_was_lost_is_not_reported_as_lost(
    settings_env, emulator, database_url, monkeypatch, capsys
):
    """The commit storing a new profile's key went through but its answer did not come back: the retry finds the key
    stored, so there is no false "created at Ayrshare but not stored" alarm and no claim left for an operator."""
    from service.profiles import DatabaseDown

    migrated = Database(database_url)
    migrated.upgrade()
    migrated.engine.dispose()
    app = create_app({**settings_env, "DATABASE_URL": database_url, "PROFILE_AUTO_CREATE": "true"})
    directory = app.extensions["users"].provisioner.directory
    complete = directory.complete

    def answer_lost(*args, **kwargs):
        monkeypatch.setattr(directory, "complete", complete)
        complete(*args, **kwargs)  # committed...
        raise DatabaseDown()  # ...and the connection dropped before the answer

    monkeypatch.setattr(directory, "complete", answer_lost)
    capsys.readouterr()
    answer = app.test_client().get(signed_path("lost-answer", SIGNING_SECRET, 300), headers=JSON)
    assert answer.status_code == 200, answer.json
    assert "not stored" not in capsys.readouterr().out
    assert directory.get("lost-answer").state == "active" and directory.pending() == []
    assert emulator.profile_stats()["creates"] == 1
