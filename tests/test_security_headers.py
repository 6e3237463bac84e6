"""Browser protections: strict CSP, nosniff and no framing on HTML pages; CORS only for listed origins, never `*`."""

from __future__ import annotations

import pytest

from service import ConfigError, create_app
from service.auth import signed_path
from tests.conftest import SIGNING_SECRET

JSON = {"Accept": "application/json"}
FRONTEND = "https://app.example.com"


def csp_directives(response) -> dict[str, str]:
    policy = response.headers["Content-Security-Policy"]
    return {part.split()[0]: " ".join(part.split()[1:]) for part in policy.split(";") if part.strip()}


def test_html_error_pages_carry_a_strict_policy(client, emulator):
    response = client.get("/connect/alice", headers={"Accept": "text/html"})
    assert response.status_code == 401 and response.mimetype == "text/html"
    directives = csp_directives(response)
    assert directives["script-src"] == "'self'"  # no inline script, no eval; error-page.js is same-origin
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'" and directives["base-uri"] == "'none'"
    assert "unsafe" not in response.headers["Content-Security-Policy"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Frame-Options"] == "DENY"
    page = response.get_data(as_text=True)
    assert "<script>" not in page and "<style>" not in page and " style=" not in page  # nothing the CSP would block


def test_the_pages_scripts_and_styles_are_same_origin_and_served(client):
    page = client.get("/connect/alice", headers={"Accept": "text/html"}).get_data(as_text=True)
    for asset in ("/static/error-page.js", "/static/pages.css"):
        assert f'"{asset}"' in page
        assert client.get(asset).status_code == 200


def test_json_and_redirect_answers_are_nosniff_and_unframeable(client, emulator):
    for headers in (JSON, {}):
        response = client.get(signed_path("alice", SIGNING_SECRET), headers=headers)
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert "frame-ancestors 'none'" in response.headers["Content-Security-Policy"]


@pytest.fixture
def cors_client(settings_env):
    return create_app({**settings_env, "CORS_ALLOWED_ORIGINS": f"{FRONTEND},http://localhost:5173"}).test_client()


def test_listed_origin_gets_its_own_origin_back_with_credentials(cors_client, emulator):
    response = cors_client.get(signed_path("alice", SIGNING_SECRET), headers={**JSON, "Origin": FRONTEND})
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    assert "Retry-After" in response.headers["Access-Control-Expose-Headers"]


def test_errors_reach_listed_origins_too(cors_client, emulator):
    response = cors_client.get("/connect/alice", headers={**JSON, "Origin": FRONTEND})
    assert response.status_code == 401 and response.headers["Access-Control-Allow-Origin"] == FRONTEND


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.com",
        "null",
        "https://app.example.com.evil.com",
        "https://evilapp.example.com",
        "http://app.example.com",
        "https://app.example.com:8443",
        "https://sub.app.example.com",
        "*",
    ],
)
def test_other_origins_get_no_cors_headers(cors_client, emulator, origin):
    response = cors_client.get(signed_path("alice", SIGNING_SECRET), headers={**JSON, "Origin": origin})
    assert "Access-Control-Allow-Origin" not in response.headers
    assert "Access-Control-Allow-Credentials" not in response.headers


@pytest.mark.parametrize("origin", ["HTTPS://APP.EXAMPLE.COM", "https://App.Example.com:443"])
def test_origins_are_compared_normalised_and_the_configured_one_is_echoed(cors_client, emulator, origin):
    # Never the raw header: what goes back is the configured origin, byte for byte.
    response = cors_client.get(signed_path("alice", SIGNING_SECRET), headers={**JSON, "Origin": origin})
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND


def test_an_origin_with_a_path_is_not_an_origin(cors_client, emulator):
    response = cors_client.get(signed_path("alice", SIGNING_SECRET), headers={**JSON, "Origin": f"{FRONTEND}/x"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_preflight_for_a_bearer_token_is_answered_for_listed_origins_only(cors_client, emulator):
    preflight = {
        "Origin": FRONTEND,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    response = cors_client.options("/connect/alice", headers=preflight)
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    other = cors_client.options("/connect/alice", headers={**preflight, "Origin": "https://evil.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert emulator.calls() == 0


def accounts_path(user: str) -> str:
    """The signed link's query on `/connect/<user>/accounts`, as connect.js asks for the linked networks."""
    path, query = signed_path(user, SIGNING_SECRET).split("?")
    return f"{path}/accounts?{query}"


def test_the_linked_networks_reach_listed_origins_only(cors_client, emulator):
    response = cors_client.get(accounts_path("alice"), headers={**JSON, "Origin": FRONTEND})
    assert response.status_code == 200 and response.json == {"networks": []}
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Credentials"] == "true"
    assert "Origin" in response.headers["Vary"]
    other = cors_client.get(accounts_path("alice"), headers={**JSON, "Origin": "https://evil.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    refused = cors_client.get("/connect/alice/accounts", headers={**JSON, "Origin": FRONTEND})
    assert refused.status_code == 401 and refused.headers["Access-Control-Allow-Origin"] == FRONTEND


def test_preflight_for_the_linked_networks_is_answered_for_listed_origins_only(cors_client, emulator):
    preflight = {
        "Origin": FRONTEND,
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    response = cors_client.options("/connect/alice/accounts", headers=preflight)
    assert response.status_code == 200
    assert response.headers["Access-Control-Allow-Origin"] == FRONTEND
    assert response.headers["Access-Control-Allow-Methods"] == "GET"
    assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
    other = cors_client.options("/connect/alice/accounts", headers={**preflight, "Origin": "https://evil.com"})
    assert "Access-Control-Allow-Origin" not in other.headers
    assert emulator.calls() == 0


def test_no_cors_headers_when_no_origin_is_configured(client, emulator):
    response = client.get(signed_path("alice", SIGNING_SECRET), headers={**JSON, "Origin": FRONTEND})
    assert "Access-Control-Allow-Origin" not in response.headers


@pytest.mark.parametrize(
    "value", ["*", "https://*.example.com", "https://app.example.com/path", "app.example.com", "null"]
)
def test_wildcards_and_non_origins_refuse_to_start(settings_env, value):
    with pytest.raises(ConfigError) as caught:
        create_app({**settings_env, "CORS_ALLOWED_ORIGINS": value})
    assert str(caught.value).startswith("CORS_ALLOWED_ORIGINS:")


def test_the_link_redirect_carries_every_protective_header_and_no_body(client):
    response = client.get(signed_path("alice", SIGNING_SECRET))
    assert response.status_code == 302 and response.get_data() == b""
    assert response.headers["Location"].startswith("http")
    for name, value in {
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
        "Content-Length": "0",
    }.items():
        assert response.headers[name] == value
    assert "Content-Type" not in response.headers


def test_a_non_ascii_location_is_sent_iri_encoded():
    from service.web.routes import link_redirect

    environ = {"SERVER_NAME": "connect.example", "SERVER_PORT": "443", "wsgi.url_scheme": "https"}
    accented = link_redirect("https://profile.ayrshare.com/connexión")
    assert accented.get_wsgi_headers(environ)["Location"] == "https://profile.ayrshare.com/connexi%C3%B3n"


@pytest.mark.parametrize("breaking", ["\n", "\r", "\r\nSet-Cookie: session=stolen"])
def test_the_link_redirect_refuses_a_location_that_would_split_the_headers(breaking):
    from service.web.routes import link_redirect

    with pytest.raises(ValueError, match="newline"):
        link_redirect(f"https://profile.ayrshare.com/?jwt=abc{breaking}")
