"""The OpenAPI description: served at /openapi.json, the same as docs/openapi.json, covering every route."""

from __future__ import annotations

import json

from service.web.openapi import COMMITTED, build_spec, spec_json

JSON = {"Accept": "application/json"}
# Served by the app but not part of the API: static files, HTML pages for browsers, and /metrics (its own port).
UNDOCUMENTED = {"/static/<path:filename>", "/done", "/demo", "/metrics"}


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
