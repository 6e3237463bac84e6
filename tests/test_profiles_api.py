"""The directory's internal API and on-demand creation, against the real emulator, Redis and both databases."""

from __future__ import annotations

import json
import logging

import pytest
import requests

from service import create_app
from service.auth import signed_path
from tests.conftest import API_KEY, INTERNAL_TOKEN, SIGNING_SECRET
from tests.support.emulator_proc import press

AUTH = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}


@pytest.fixture
def env(settings_env, database_url):
    from service.profiles import Database

    database = Database(database_url)
    database.upgrade()
    database.engine.dispose()
    return {**settings_env, "DATABASE_URL": database_url}


@pytest.fixture
def make_client(env):
    def make(**overrides):
        app = create_app({**env, **overrides})
        app.config["TESTING"] = True
        return app.test_client()

    return make


@pytest.fixture
def client(make_client):
    return make_client()


def new_key(emulator, title: str) -> str:
    """A profile created straight at the emulator (as a team would in Ayrshare's dashboard)."""
    answer = requests.post(
        f"{emulator.base_url}/profiles",
        json={"title": title},
        headers={"Authorization": f"Bearer {API_KEY}"},
        timeout=10,
    )
    assert answer.status_code == 200, answer.text
    return answer.json()["profileKey"]


def signed(user: str) -> str:
    return signed_path(user, SIGNING_SECRET, 300)


# -- attach, read, list, delete ----------------------------------------------------------------------------------
def test_attach_is_idempotent_and_get_shows_the_row(client, emulator):
    key = new_key(emulator, "Dana's profile")
    first = client.put(
        "/internal/v1/users/dana", json={"profileKey": key, "refId": "r1", "title": "Dana"}, headers=AUTH
    )
    assert first.status_code == 201, first.json
    again = client.put("/internal/v1/users/dana", json={"profileKey": key, "title": "Dana"}, headers=AUTH)
    assert again.status_code == 200
    body = client.get("/internal/v1/users/dana", headers=AUTH).json
    assert body["user"] == "dana" and body["profileKey"] == key and body["source"] == "api"
    assert body["title"] == "Dana" and body["createdAt"].endswith("Z") and body["linkedNetworks"] is None
    assert client.get("/internal/v1/users/nobody", headers=AUTH).status_code == 404


def test_an_attached_user_connects(client, emulator):
    key = new_key(emulator, "Dana's profile")
    client.put("/internal/v1/users/dana", json={"profileKey": key}, headers=AUTH)
    response = client.get(signed("dana"))
    assert response.status_code == 302, response.json


def test_a_key_ayrshare_refuses_is_422_and_nothing_is_stored(client):
    response = client.put("/internal/v1/users/dana", json={"profileKey": "PK-NOT-KNOWN-9999"}, headers=AUTH)
    assert response.status_code == 422 and response.json["error"]["code"] == "profile_key_refused"
    assert "PK-NOT-KNOWN-9999" not in response.get_data(as_text=True)
    assert client.get("/internal/v1/users/dana", headers=AUTH).status_code == 404


@pytest.mark.parametrize(
    "body, field",
    [
        ({}, "profileKey"),
        ({"profileKey": "short"}, "profileKey"),
        ({"profileKey": "has spaces in it"}, "profileKey"),
        ({"profileKey": "PK-GOOD-0001 and then more"}, "profileKey"),
        ({"profileKey": "PK-GOOD-0001\n"}, "profileKey"),
        ({"profileKey": "PK-GOOD-0001", "colour": "red"}, "colour"),
        ({"profileKey": "PK-GOOD-0001", "title": ""}, "title"),
        ({"profileKey": "PK-GOOD-0001", "title": "a\u0000b"}, "title"),
        ({"profileKey": "PK-GOOD-0001", "refId": "r\n1"}, "refId"),
        ([], None),
        ("not json", None),
    ],
)
def test_bad_attach_bodies_are_400_naming_the_field_and_store_nothing(client, body, field):
    response = client.put(
        "/internal/v1/users/dana",
        data=json.dumps(body) if body != "not json" else body,
        headers={**AUTH, "Content-Type": "application/json"},
    )
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_profile"
    if field:
        assert f"'{field}'" in response.json["error"]["message"]
    assert client.get("/internal/v1/users/dana", headers=AUTH).status_code == 404


def test_a_bad_user_id_is_400(client):
    response = client.get("/internal/v1/users/bad%20id", headers=AUTH)
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_user_id"


def test_users_page_through_with_a_cursor_and_never_show_keys(client, emulator):
    key = new_key(emulator, "paged")
    for index in range(5):
        client.put(f"/internal/v1/users/page{index}", json={"profileKey": key}, headers=AUTH)
    seen, cursor = [], None
    while True:
        query = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        body = client.get("/internal/v1/users", query_string=query, headers=AUTH).json
        assert key not in json.dumps(body)
        seen += [user["user"] for user in body["users"]]
        cursor = body["nextCursor"]
        if cursor is None:
            break
    assert seen == [f"page{index}" for index in range(5)]
    for query, code in [
        ("limit=0", "bad_limit"),
        ("limit=%C2%B2", "bad_limit"),  # '²' is a digit to str.isdigit
        ("cursor=%%%", "bad_cursor"),
        ("cursor=AA", "bad_cursor"),  # decodes to a NUL byte
    ]:
        response = client.get(f"/internal/v1/users?{query}", headers=AUTH)
        assert response.status_code == 400 and response.json["error"]["code"] == code, query


def test_deleting_a_user_revokes_their_sessions_and_can_delete_the_profile(client, emulator):
    key = new_key(emulator, "Gone")
    client.put("/internal/v1/users/gone", json={"profileKey": key}, headers=AUTH)
    assert client.get(signed("gone")).status_code == 302
    assert client.delete("/internal/v1/users/gone?deleteProfile=true", headers=AUTH).status_code == 204
    assert emulator.session_stats()["revokes"] == 1
    assert emulator.profile_stats()["deletes"] == 1
    assert client.get("/internal/v1/users/gone", headers=AUTH).status_code == 404
    assert client.get(signed("gone")).status_code == 404
    assert client.delete("/internal/v1/users/gone", headers=AUTH).status_code == 404


def test_a_user_from_the_profiles_file_is_managed_by_the_file(client):
    response = client.delete("/internal/v1/users/alice", headers=AUTH)
    assert response.status_code == 409 and response.json["error"]["code"] == "user_in_profile_keys_file"


# -- creation ------------------------------------------------------------------------------------------------------
def test_post_profile_creates_once_then_answers_200(client, emulator):
    first = client.post("/internal/v1/users/newbie/profile", headers=AUTH)
    assert first.status_code == 201, first.json
    assert first.json["source"] == "api" and first.json["title"] == "newbie" and first.json["refId"]
    again = client.post("/internal/v1/users/newbie/profile", headers=AUTH)
    assert again.status_code == 200 and again.json["profileKey"] == first.json["profileKey"]
    assert emulator.created_profiles()["count"] == 1


def test_first_connect_creates_the_profile_when_auto_create_is_on(make_client, emulator):
    client = make_client(PROFILE_AUTO_CREATE="true")
    response = client.get(signed("firstclick"))
    assert response.status_code == 302, response.json
    assert client.get(signed("firstclick")).status_code == 302
    [profile] = emulator.created_profiles()["profiles"]
    assert profile["title"] == "firstclick"
    assert client.get("/internal/v1/users/firstclick", headers=AUTH).json["source"] == "auto"


def test_without_auto_create_an_unknown_user_is_404_and_nothing_is_created(client, emulator):
    assert client.get(signed("stranger")).status_code == 404
    assert emulator.created_profiles()["count"] == 0


def test_an_unauthenticated_caller_never_creates_a_profile(make_client, emulator):
    client = make_client(PROFILE_AUTO_CREATE="true", CONNECT_AUTH="none")
    assert client.get("/connect/stranger").status_code == 404
    assert emulator.created_profiles()["count"] == 0


def test_a_taken_title_gets_a_suffix_not_a_second_profile_for_the_user(make_client, emulator):
    new_key(emulator, "taken")
    client = make_client(PROFILE_AUTO_CREATE="true")
    assert client.get(signed("taken")).status_code == 302
    titles = sorted(p["title"] for p in emulator.created_profiles()["profiles"])
    assert titles[0] == "taken" and titles[1].startswith("taken ~") and len(titles) == 2
    assert client.get("/internal/v1/users/taken", headers=AUTH).json["title"] == titles[1]


def test_an_ayrshare_that_refuses_the_connection_leaves_no_claim_behind(make_client, emulator):
    # No connection, no request: nothing can have been created, so the next click (Ayrshare back) creates the
    # profile instead of being told an operator must act.
    from tests.support.processes import free_port

    unreachable = make_client(PROFILE_AUTO_CREATE="true", AYRSHARE_BASE_URL=f"http://127.0.0.1:{free_port()}/api")
    answer = unreachable.get(signed("early"), headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json["error"]["code"] == "upstream_unavailable"
    assert unreachable.get("/internal/v1/users/early", headers=AUTH).status_code == 404  # no claim kept
    assert make_client(PROFILE_AUTO_CREATE="true").get(signed("early")).status_code == 302
    assert emulator.created_profiles()["count"] == 1


def test_a_claim_released_by_an_operator_during_a_title_retry_is_a_503_not_a_500(make_client, emulator, monkeypatch):
    from service.profiles.directory import Directory

    new_key(emulator, "retaken")
    retitle = Directory.retitle

    def released_by_an_operator_first(self, claim, title, lease_seconds):
        self.release(claim)  # `flask profiles release` at this moment
        return retitle(self, claim, title, lease_seconds)

    monkeypatch.setattr(Directory, "retitle", released_by_an_operator_first)
    answer = make_client(PROFILE_AUTO_CREATE="true").get(signed("retaken"), headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json["error"]["code"] == "profile_creation_in_progress"
    assert emulator.created_profiles()["count"] == 1  # the dashboard's own: the duplicate title created nothing


def test_a_key_the_database_would_not_store_leaves_the_claim_pending_as_not_stored(make_client, emulator, monkeypatch):
    from service.profiles import DatabaseDown
    from service.profiles.directory import Directory

    def refused(*args, **kwargs):
        raise DatabaseDown()  # the write of the key fails every time; the database is otherwise up

    monkeypatch.setattr(Directory, "complete", refused)
    client = make_client(PROFILE_AUTO_CREATE="true")
    answer = client.get(signed("unstored"), headers={"Accept": "application/json"})
    assert answer.status_code == 503 and answer.json["error"]["code"] == "database_unavailable"
    directory = client.application.extensions["users"].directory
    assert [(r.user, r.state, r.pending_reason) for r in directory.pending()] == [("unstored", "pending", "not_stored")]
    assert emulator.created_profiles()["count"] == 1


def test_the_hourly_creation_cap_answers_429_with_its_code(make_client, emulator):
    client = make_client(PROFILE_AUTO_CREATE="true", PROFILE_CREATE_MAX_PER_HOUR="1")
    assert client.get(signed("capped1")).status_code == 302
    response = client.get(signed("capped2"), headers={"Accept": "application/json"})
    assert response.status_code == 429 and response.json["error"]["code"] == "profile_create_limit"
    assert response.headers["Retry-After"].isdigit()
    assert emulator.created_profiles()["count"] == 1
    assert client.get("/internal/v1/users/capped2", headers=AUTH).status_code == 404  # no claim left behind


def test_a_refused_creation_leaves_no_claim(make_client, emulator):
    client = make_client(PROFILE_AUTO_CREATE="true")
    emulator.set_knobs(fault="429", fault_count=1)
    assert client.get(signed("refused"), headers={"Accept": "application/json"}).status_code == 503
    assert client.get("/internal/v1/users/refused", headers=AUTH).status_code == 404
    assert client.get(signed("refused")).status_code == 302  # and the next click creates it
    assert emulator.created_profiles()["count"] == 1


@pytest.mark.parametrize("fault", ["500", "missing_profile_key"])
def test_a_lost_answer_keeps_the_claim_so_no_second_profile_is_made(make_client, emulator, fault):
    client = make_client(PROFILE_AUTO_CREATE="true")
    emulator.set_knobs(fault=fault, fault_count=1)
    assert client.get(signed("unsure"), headers={"Accept": "application/json"}).status_code in (502, 503)
    record = client.get("/internal/v1/users/unsure", headers=AUTH).json
    assert record["state"] == "pending" and record["profileKey"] is None
    again = client.get(signed("unsure"), headers={"Accept": "application/json"})
    assert again.status_code in (409, 503) and again.json["error"]["code"].startswith("profile_creation")
    assert emulator.profile_stats()["creates"] == 1
    # The operator found the profile in the dashboard and attaches its key over the stuck claim.
    key = new_key(emulator, "found in the dashboard")
    attached = client.put("/internal/v1/users/unsure", json={"profileKey": key}, headers=AUTH)
    assert attached.status_code == 201 and attached.json["state"] == "active"
    assert client.get(signed("unsure")).status_code == 302


# -- linked accounts -----------------------------------------------------------------------------------------------
def test_accounts_show_what_the_user_linked_and_are_cached(make_client, emulator):
    client = make_client(ACCOUNTS_CACHE_SECONDS="60")
    created = client.post("/internal/v1/users/linker/profile", headers=AUTH).json
    link = client.get(signed("linker"))
    page = requests.get(link.headers["Location"], timeout=10)
    press(page, "linkedin", "link")
    body = client.get("/internal/v1/users/linker/accounts", headers=AUTH).json
    assert body["networks"] == ["linkedin"]
    reads = emulator.profile_stats()["user_reads"]
    for _ in range(5):
        assert client.get("/internal/v1/users/linker/accounts", headers=AUTH).json["networks"] == ["linkedin"]
    assert emulator.profile_stats()["user_reads"] == reads
    row = client.get("/internal/v1/users/linker", headers=AUTH).json
    assert row["linkedNetworks"] == ["linkedin"] and row["linkedNetworksCheckedAt"]
    assert created["profileKey"] not in json.dumps(body)
    unlinked = client.delete("/internal/v1/users/linker/accounts/linkedin", headers=AUTH)
    assert unlinked.status_code == 200 and unlinked.json["networks"] == []
    assert client.delete("/internal/v1/users/linker/accounts/myspace", headers=AUTH).status_code == 400


# -- who may call, and what never leaks -------------------------------------------------------------------------
@pytest.mark.parametrize("method, path", [("GET", "/internal/v1/users"), ("PUT", "/internal/v1/users/x")])
def test_only_the_internal_token_opens_the_directory(client, method, path):
    assert client.open(path, method=method).status_code == 401
    signed_query = signed("x").split("?", 1)[1]
    assert client.open(f"{path}?{signed_query}", method=method).status_code == 401
    wrong = {"Authorization": "Bearer " + "w" * 32}
    assert client.open(path, method=method, headers=wrong).status_code == 401


def test_no_profile_key_reaches_a_log_line(make_client, emulator, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(PROFILE_AUTO_CREATE="true")
    client.get(signed("quiet"))
    key = client.get("/internal/v1/users/quiet", headers=AUTH).json["profileKey"]
    client.put("/internal/v1/users/other", json={"profileKey": "PK-NOT-KNOWN-9999"}, headers=AUTH)
    client.delete("/internal/v1/users/quiet?deleteProfile=true", headers=AUTH)
    text = "\n".join(record.getMessage() + repr(record.__dict__) for record in caplog.records)
    assert key not in text and "PK-NOT-KNOWN-9999" not in text
