"""The OpenAPI description: served at /openapi.json, the same as docs/openapi.json, covering every route, and kept by
the running service (schemathesis drives real gunicorn from the description; no 5xx, every answer conforms)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.errors import FlakyStrategyDefinition, Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.web.openapi import COMMITTED, build_spec, spec_json
from tests.conftest import INTERNAL_TOKEN

JSON = {"Accept": "application/json"}
# Served by the app but not part of the API: static files, HTML pages for browsers, and /metrics (its own port).
UNDOCUMENTED = {"/static/<path:filename>", "/done", "/demo", "/metrics", "/favicon.ico"}  # files and pages


def test_the_served_description_is_the_committed_one(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.get_data(as_text=True) == COMMITTED.read_text(), "run `make openapi` and commit docs/openapi.json"
    assert response.json["openapi"] == "3.1.0"


def test_every_route_is_described(app):
    described = {(path, method.upper()) for path, operations in build_spec()["paths"].items() for method in operations}
    for rule in app.url_map.iter_rules():
        if rule.rule in UNDOCUMENTED:
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            assert (path, method) in described, f"{method} {rule.rule} is not in the OpenAPI description"


def test_the_description_names_the_three_security_schemes():
    schemes = build_spec()["components"]["securitySchemes"]
    assert schemes["internalToken"] == {**schemes["internalToken"], "type": "http", "scheme": "bearer"}
    assert schemes["sessionJwt"]["bearerFormat"] == "JWT"
    assert {schemes[name]["name"] for name in ("signedLinkExpires", "signedLinkSignature")} == {"expires", "signature"}


def test_an_error_is_a_problem_details_object_in_every_blueprint(client):
    for path, headers in (("/connect/alice", JSON), ("/internal/v1/users", {}), ("/nope", JSON)):
        response = client.get(path, headers=headers)
        body = response.json
        assert response.mimetype == "application/problem+json", path
        assert body["type"] == f"https://ayrshare-connect.dev/problems/{body['code']}"
        assert body["status"] == response.status_code and body["detail"] == body["error"]["message"]
        assert body["code"] == body["error"]["code"] and body["requestId"] == response.headers["X-Request-ID"]


def test_a_caller_asking_for_problem_json_gets_json_not_a_page(client):
    response = client.get("/connect/alice", headers={"Accept": "application/problem+json"})
    assert response.status_code == 401 and response.mimetype == "application/problem+json"


def test_the_file_is_what_make_openapi_writes():
    assert json.loads(spec_json()) == build_spec()


# -- the running service keeps the contract --------------------------------------------------------------------
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 15  # per operation and mode: about 15 s a database
STATEFUL_SCENARIOS = 40  # scenarios a database, of at most STATEFUL_STEPS calls
STATEFUL_STEPS = 8
LISTED_USER = "listed"  # in the directory at the start of every stateful scenario
DIRECTORY_USER = "dora"  # attached through the API before the run; "alice" is in PROFILE_KEYS_FILE
KNOWN_USERS = ("alice", DIRECTORY_USER)
# Operations with no parameter or body: there is no invalid request of them to make.
NOTHING_TO_NEGATE = {"GET /healthz", "GET /readyz", "GET /openapi.json"}
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


@pytest.fixture
def running_service(start_service, database_url):
    """Real gunicorn on a fresh, migrated database, with webhooks in and the outbox on (forwarding to a closed port:
    no event verifies, so nothing is ever sent)."""
    from service.profiles import Database

    Database(database_url).upgrade()
    return start_service(
        workers=2,
        DATABASE_URL=database_url,
        AYRSHARE_WEBHOOK_SECRET=WEBHOOK_SECRET,
        WEBHOOK_FORWARD_URL="http://127.0.0.1:9/events",
        WEBHOOK_FORWARD_SECRET=WEBHOOK_SECRET,
    )


def _cases(operation, mode):
    """Generated requests; in positive mode, those naming a user also name users who exist (a random id is a 404)."""
    strategy = operation.as_strategy(mode)
    if mode is schemathesis.GenerationMode.NEGATIVE or "{user}" not in operation.path:
        return strategy
    known = [operation.as_strategy(mode, path_parameters={"user": user}) for user in KNOWN_USERS]
    return st.one_of(strategy, *known)


@pytest.mark.parametrize("mode", [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE])
def test_the_running_service_keeps_its_contract(running_service, emulator, mode):
    """Every operation, with the internal token (the one credential every route but the webhook accepts): no 5xx, and
    every status, content type, header and body is the one the description gives.

    Nothing is excluded: every call the service makes goes to the local emulator. The webhook's generated signatures
    never verify (so its accepted path is tests/test_webhooks.py's), and schemathesis skips GET /openapi.json, the
    document it reads.
    """
    schema = schemathesis.openapi.from_url(running_service.url + "/openapi.json")
    session = requests.Session()
    headers = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    attached = session.put(
        f"{running_service.url}/internal/v1/users/{DIRECTORY_USER}",
        json={"profileKey": "PK-USER-0007"},
        headers=headers,
    )
    assert attached.status_code == 201, attached.text
    failures: list[str] = []
    sent: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,  # a request's time is the service's, not the generator's
            database=None,
            derandomize=True,  # the same examples on every run: a red test means the code changed
            suppress_health_check=list(HealthCheck),
        )
        # Accept picks /connect's answer form (the JSON link, or a redirect) and its error form (problem or page).
        @given(case=_cases(operation, mode), accept=st.sampled_from(["application/json", "text/html", "*/*"]))
        def exercise(case, accept):
            sent.append(case.operation.label)
            case.call_and_validate(
                base_url=running_service.url,
                session=session,
                headers={**headers, "Accept": accept},
                checks=CHECKS,
                timeout=15,
            )

        try:
            exercise()
        except Unsatisfiable:
            if mode is schemathesis.GenerationMode.POSITIVE or operation.label not in NOTHING_TO_NEGATE:
                failures.append(f"{operation.label}: no example could be made")
        except Exception as failure:  # collect every operation's failure, not just the first
            failures.append(f"{operation.label}: {failure}")
    assert not failures, "\n\n".join(failures)
    operations = {f"{method.upper()} {path}" for path, item in build_spec()["paths"].items() for method in item}
    # schemathesis leaves out the operation that serves the description it reads.
    expected = (
        operations
        - {"GET /openapi.json"}
        - (NOTHING_TO_NEGATE if mode is schemathesis.GenerationMode.NEGATIVE else set())
    )
    assert set(sent) == expected
    assert len(sent) > 5 * len(expected)


# -- bugs the contract work found: client mistakes that were 500s or 503s ---------------------------------------
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_odd_query_values_are_400s_not_server_errors(settings_env, database_url):
    """`limit=²` passed str.isdigit() and then failed int() (500); NUL in a cursor, `after` or a delivery id reached
    PostgreSQL, which refuses NUL in text, and came back as 503 database_unavailable (a retry that never helps)."""
    from service import create_app
    from service.profiles import Database

    Database(database_url).upgrade()
    forward = {
        "WEBHOOK_FORWARD_URL": "http://127.0.0.1:9/events",
        "WEBHOOK_FORWARD_SECRET": WEBHOOK_SECRET,
        "WEBHOOK_DELIVERY": "process",  # no deliverer thread outliving this test's database
    }
    client = create_app({**settings_env, "DATABASE_URL": database_url, **forward}).test_client()
    auth = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    for path, code in (
        ("/internal/v1/users?limit=%C2%B2", "bad_limit"),
        ("/internal/v1/webhooks/deliveries?limit=%C2%B2", "bad_limit"),
        ("/internal/v1/webhooks/deliveries?after=%00", "bad_after"),
        ("/internal/v1/users?cursor=AA", "bad_cursor"),  # the base64 of one NUL byte
    ):
        assert client.get(path, headers=auth).json["code"] == code, path
    missing = client.post("/internal/v1/webhooks/deliveries/evt%00/retry", headers=auth)
    assert missing.status_code == 404 and missing.json["code"] == "unknown_delivery"
    # Empty values still count as absent, as before.
    assert client.get("/internal/v1/users?limit=&cursor=", headers=auth).status_code == 200
    assert client.get("/internal/v1/webhooks/deliveries?state=&after=&limit=3", headers=auth).status_code == 200


# -- the users API along its links (stateful) --------------------------------------------------------------------
# What the description's links promise a client, as (operation, status, next operation). The walk test follows each
# one with the value it names; the state machine takes them at random, with every answer checked.
USER_LINKS = {
    ("createProfile", "201", "getUser"),
    ("listUsers", "200", "getUser"),
    ("getUser", "200", "revokeLinks"),
    ("revokeLinks", "200", "deleteUser"),
    ("deleteUser", "204", "getUser"),
}
STATEFUL_CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
# Not schemathesis's use_after_free: it counts a re-creation only on the deleted path or a prefix of it, so
# DELETE /users/u, POST /users/u/profile, GET /users/u would be reported. The state machine checks deletes itself.
CREATES = {"createProfile", "attachUser"}
STATEFUL_CONFIG = {
    "phases": {
        "stateful": {
            "inference": {"algorithms": []},  # only the declared links: none guessed from names or Location headers
            "checks": {"enabled": False, **{name: {"enabled": True} for name in STATEFUL_CHECKS}},
        }
    }
}


def _operations() -> list[tuple[str, str, dict]]:
    """Every operation of the description, as (method, path, operation object)."""
    return [
        (method, path, operation) for path, item in build_spec()["paths"].items() for method, operation in item.items()
    ]


def _declared_links() -> dict[tuple[str, str, str], dict]:
    """The description's links, by (operation, status, next operation)."""
    links = {}
    for _method, _path, operation in _operations():
        for status, response in operation["responses"].items():
            for link in response.get("links", {}).values():
                links[(operation["operationId"], status, link["operationId"])] = link
    return links


def _resolve(expression: str, step: dict):
    """The value of a link's runtime expression for one step (the two forms the description uses)."""
    if expression == "$request.path.user":
        return step["user"]
    source, _, pointer = expression.partition("#")
    assert source == "$response.body", expression
    value = step["body"]
    for token in pointer.split("/")[1:]:
        if isinstance(value, list):
            value = value[int(token)] if int(token) < len(value) else None
        else:
            value = value.get(token) if isinstance(value, dict) else None
    return value


def _link_followed(declared: dict, earlier_steps: list[dict], step: dict) -> tuple[str, str, str] | None:
    """The link this step followed: of the earlier steps whose link to this operation names this step's user, the
    latest (another link may name the same user earlier, as when a page lists a user that was just created)."""
    for earlier in reversed(earlier_steps):
        key = (earlier["operation"], earlier["status"], step["operation"])
        if key in declared and _resolve(declared[key]["parameters"]["path.user"], earlier) == step["user"]:
            return key
    return None


def _last_change(steps: list[dict], user: str) -> str | None:
    """What the latest successful delete or create of `user` among `steps` did ("deleted", "created"), else None."""
    for step in reversed(steps):
        if step["user"] == user and step["status"].startswith("2"):
            if step["operation"] == "deleteUser":
                return "deleted"
            if step["operation"] in CREATES:
                return "created"
    return None


def _start_from_one_user(session: requests.Session, url: str) -> None:
    """Delete every user and their profile, then create LISTED_USER: each scenario starts from the same directory, as
    Hypothesis expects (it replays a scenario's choices and stops with FlakyStrategyDefinition if the answers differ),
    and a first listUsers already has a user whose link to getUser can be followed."""
    auth = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
    while users := session.get(f"{url}/internal/v1/users", headers=auth, timeout=15).json()["users"]:
        for user in users:
            deleted = session.delete(
                f"{url}/internal/v1/users/{user['user']}", params={"deleteProfile": "true"}, headers=auth, timeout=15
            )
            assert deleted.status_code == 204, deleted.text
    created = session.post(f"{url}/internal/v1/users/{LISTED_USER}/profile", headers=auth, timeout=15)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize("database_url", ["sqlite", "postgres"], indirect=True)
def test_the_users_api_keeps_its_contract_along_its_links(start_service, database_url, emulator):
    """schemathesis's state machine built from the description's links alone: create or list users, read one,
    revoke their links, delete them, read them again (a 404). Every answer conforms, a deleted user is read back
    only after being created again, and the walk takes declared links."""
    from service.profiles import Database

    Database(database_url).upgrade()
    # Scenarios create many profiles; the default PROFILE_CREATE_MAX_PER_HOUR would turn the later ones into 429s.
    service = start_service(workers=2, DATABASE_URL=database_url, PROFILE_CREATE_MAX_PER_HOUR="100000")
    declared = _declared_links()
    assert set(declared) == USER_LINKS
    operation_ids = {f"{method.upper()} {path}": operation["operationId"] for method, path, operation in _operations()}
    schema = schemathesis.openapi.from_url(
        service.url + "/openapi.json", config=schemathesis.Config.from_dict(STATEFUL_CONFIG)
    )
    session = requests.Session()
    followed: set[tuple[str, str, str]] = set()
    all_steps: list[dict] = []

    class UsersAlongTheirLinks(schema.as_state_machine()):
        def setup(self):
            _start_from_one_user(session, service.url)
            self.steps: list[dict] = []

        def get_call_kwargs(self, case):
            headers = {"Authorization": f"Bearer {INTERNAL_TOKEN}", "Accept": "application/json"}
            return {"base_url": service.url, "session": session, "headers": headers, "timeout": 15}

        def after_call(self, response, case):
            super().after_call(response, case)
            step = {
                "operation": operation_ids[case.operation.label],
                "status": str(response.status_code),
                "user": (case.path_parameters or {}).get("user"),
                "body": response.json() if response.content else None,
            }
            if (link := _link_followed(declared, self.steps, step)) is not None:
                followed.add(link)
            if step["operation"] == "getUser" and step["status"] == "200":
                assert _last_change(self.steps, step["user"]) != "deleted", f"{step['user']} read back after its delete"
            self.steps.append(step)
            all_steps.append(step)

    run = settings(
        max_examples=STATEFUL_SCENARIOS,
        stateful_step_count=STATEFUL_STEPS,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
    )
    # schemathesis decides whether to apply each link with a coin Hypothesis does not record, so a replayed prefix
    # can draw differently; its own runner starts the scenarios again then, and so does this test (up to twice).
    for attempt in range(3):
        try:
            UsersAlongTheirLinks.run(settings=run)
            break
        except FlakyStrategyDefinition:
            if attempt == 2:
                raise
    answered = Counter((step["operation"], step["status"]) for step in all_steps)
    assert followed, f"no declared link was taken; answers: {answered}"


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_each_declared_link_leads_where_it_says(start_service, database_url, emulator):
    """Create a user, list, read, revoke, delete, read again: each next call takes its user from the link's own
    expression, and answers what the link promises. Fails when a link is missing, renamed or points at the wrong
    value."""
    from service.profiles import Database

    Database(database_url).upgrade()
    service = start_service(workers=1, DATABASE_URL=database_url)
    declared = _declared_links()
    assert set(declared) == USER_LINKS
    routes = {operation["operationId"]: (method, path) for method, path, operation in _operations()}
    session = requests.Session()
    session.headers.update({"Authorization": f"Bearer {INTERNAL_TOKEN}", "Accept": "application/json"})

    def call(operation: str, user: str | None) -> dict:
        method, path = routes[operation]
        response = session.request(method, service.url + path.replace("{user}", user or ""), timeout=15)
        body = response.json() if response.content else None
        return {"operation": operation, "status": str(response.status_code), "user": user, "body": body}

    def follow(step: dict, operation: str, expected_status: str) -> dict:
        link = declared[(step["operation"], step["status"], operation)]
        following = call(operation, _resolve(link["parameters"]["path.user"], step))
        assert following["status"] == expected_status, following
        return following

    created = call("createProfile", "walker")
    assert created["status"] == "201", created
    read = follow(created, "getUser", "200")
    assert read["body"]["user"] == "walker"
    listed = call("listUsers", None)
    assert follow(listed, "getUser", "200")["body"]["user"] == listed["body"]["users"][0]["user"]
    revoked = follow(read, "revokeLinks", "200")
    gone = follow(revoked, "deleteUser", "204")
    follow(gone, "getUser", "404")
