"""The service's browser pages without a browser: /done, /demo, the error page's data, FRONTEND_ORIGINS, connect.js.

What the pages *do* in a browser is proven in tests/browser/; here: what they are given, what they refuse, and that
they carry no inline script or style (the strict CSP would block it) and no secret.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from service import ConfigError, create_app, errors
from service.auth import check_signature, signed_path
from service.config import load_settings
from service.web.errors import page_wording
from service.web.pages import LINKED_FRAGMENT, safe_return_url
from tests.conftest import API_KEY, PROFILES, SIGNING_SECRET
from tests.support.corpora import OPEN_REDIRECTS

APP = "https://app.example.com"
CORPUS = OPEN_REDIRECTS


def attr(html: str, element_id: str, name: str) -> str:
    tag = re.search(rf'<[^>]*\bid="{element_id}"[^>]*>', html, re.S)
    assert tag, f"no element #{element_id}"
    value = re.search(rf'\b{name}="([^"]*)"', tag.group(0))
    assert value, f"#{element_id} has no {name}"
    return value.group(1).replace("&amp;", "&").replace("&#34;", '"')


def assert_csp_ready(html: str) -> None:
    assert "<style" not in html and " style=" not in html
    assert all('src="' in tag for tag in re.findall(r"<script[^>]*>", html)), "inline script"


@pytest.mark.parametrize(
    "value",
    [
        f"{APP}/settings",
        f"{APP}/settings?tab=social#section",
        "https://APP.example.com:443/settings",
        APP,
    ],
)
def test_return_urls_on_a_frontend_origin_are_kept_with_the_linked_fragment(value):
    result = safe_return_url(value, (APP,))
    assert result is not None
    parts = urlsplit(result)
    assert f"{parts.scheme}://{parts.hostname}" == APP and parts.fragment == LINKED_FRAGMENT


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "/demo",
        "//evil.example/x",
        "/\\evil.example",
        "https://evil.example/",
        "https://app.example.com.evil.example/",
        "https://app.example.com@evil.example/",
        "https://user:pw@app.example.com/",
        "http://app.example.com/",  # scheme is part of the origin
        "https://app.example.com:8443/",
        "javascript:alert(1)//https://app.example.com",
        "data:text/html,hi",
        "https://app.example.com/\tx",
        "https://app.example.com:99999/",
        "https://app.example.com/" + "a" * 3000,
    ],
)
def test_other_return_urls_are_refused(value):
    assert safe_return_url(value, (APP,)) is None


def test_no_open_redirect_from_the_shared_corpus_passes_as_a_return_url():
    payloads = [line for line in CORPUS.read_text(encoding="utf-8").split("\n") if line]
    allowed = ("https://www.whitelisteddomain.tld", "http://www.whitelisteddomain.tld")
    assert len(payloads) > 500
    passed = [p for p in payloads if safe_return_url(unquote(p), allowed) or safe_return_url(p, allowed)]
    assert passed == []


@pytest.mark.parametrize(
    "value",
    [
        "https://web.example.org/x",
        "web.example.org",
        "https://*.example.org",
        "ftp://a.b",
        "https://u:p@web.example.org",
    ],
)
def test_frontend_origins_must_be_bare_origins(settings_env, value):
    with pytest.raises(ConfigError) as error:
        load_settings({**settings_env, "FRONTEND_ORIGINS": f"{APP},{value}"})
    assert str(error.value).startswith("FRONTEND_ORIGINS:")
    assert value not in str(error.value)


def test_frontend_origins_are_normalised_like_browsers_send_them(settings_env):
    settings = load_settings(
        {**settings_env, "FRONTEND_ORIGINS": "https://Web.Example.org:443/,http://localhost:3000/"}
    )
    assert settings.frontend_origins == ("https://web.example.org", "http://localhost:3000")


def test_frontend_origins_are_parsed(settings_env):
    settings = load_settings({**settings_env, "FRONTEND_ORIGINS": f" {APP} , http://127.0.0.1:3000"})
    assert settings.frontend_origins == (APP, "http://127.0.0.1:3000")


def test_done_page_reports_to_the_configured_origins_and_returns_only_to_them(settings_env):
    client = create_app({**settings_env, "FRONTEND_ORIGINS": f"{APP},http://127.0.0.1:3000"}).test_client()

    good = client.get("/done", query_string={"return": f"{APP}/settings", "origin": "true"})
    html = good.get_data(as_text=True)
    assert good.status_code == 200 and good.mimetype == "text/html"
    assert good.headers["Cache-Control"] == "no-store" and good.headers["Referrer-Policy"] == "no-referrer"
    assert attr(html, "done", "data-notify-origins") == f"{APP} http://127.0.0.1:3000"
    assert attr(html, "done", "data-return-to") == f"{APP}/settings#{LINKED_FRAGMENT}"
    assert attr(html, "done", "data-redirect-opener") == "true"
    assert_csp_ready(html)

    evil = client.get("/done", query_string={"return": "https://evil.example/"}).get_data(as_text=True)
    assert attr(evil, "done", "data-return-to") == ""
    assert "evil.example" not in evil
    assert attr(evil, "done", "data-redirect-opener") == "false"


def test_done_page_in_demo_mode_returns_to_the_demo(settings_env):
    client = create_app({**settings_env, "DEMO_MODE": "1"}).test_client()
    html = client.get("/done").get_data(as_text=True)
    assert attr(html, "done", "data-return-to") == f"/demo#{LINKED_FRAGMENT}"
    assert attr(html, "done", "data-notify-origins") == ""


def test_demo_page_is_not_there_outside_demo_mode(client):
    response = client.get("/demo", headers={"Accept": "text/html"})
    assert response.status_code == 404
    assert "Page not found" in response.get_data(as_text=True)


def test_demo_page_renders_signed_links_for_every_user_that_the_service_accepts(settings_env):
    client = create_app({**settings_env, "DEMO_MODE": "1"}).test_client()
    response = client.get("/demo?link_ttl=120")
    html = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert_csp_ready(html)
    assert SIGNING_SECRET not in html and API_KEY not in html
    assert attr(html, "link-mode", "data-mode") == "signed"

    links = dict(re.findall(r'<option value="([^"]+)" data-url="([^"]+)"', html))
    assert set(PROFILES) <= set(links) and "nobody" in links
    for user in ("alice", "carol@example.com", "nobody"):
        url = urlsplit(links[user].replace("&amp;", "&"))
        assert unquote(url.path) == f"/connect/{user}"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        assert check_signature(user, query, SIGNING_SECRET, 86400, time.time()).user == user
        assert 100 < int(query["expires"]) - time.time() <= 120


def test_signed_demo_page_offers_an_expired_link_and_one_signed_for_another_user(settings_env):
    html = create_app({**settings_env, "DEMO_MODE": "1"}).test_client().get("/demo").get_data(as_text=True)
    links = dict(re.findall(r'<option value="([^"]+)" data-url="([^"]+)"', html))
    failing = {value: link.replace("&amp;", "&") for value, link in links.items() if ":" in value}
    assert len(failing) == 2, failing
    for value, link in failing.items():
        kind, user = value.split(":")
        url = urlsplit(link)
        assert unquote(url.path) == f"/connect/{user}"
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with pytest.raises(errors.ServiceError) as refused:
            check_signature(user, query, SIGNING_SECRET, 86400, time.time())
        assert refused.value.code == {"expired": "link_expired", "wrong-user": "bad_signature"}[kind]


def test_demo_page_uses_plain_links_when_the_service_checks_no_signatures(settings_env):
    env = {**settings_env, "DEMO_MODE": "1", "CONNECT_AUTH": "none"}
    html = create_app(env).test_client().get("/demo").get_data(as_text=True)
    assert attr(html, "link-mode", "data-mode") == "open"
    links = dict(re.findall(r'<option value="([^"]+)" data-url="([^"]+)"', html))
    assert links["alice"] == "/connect/alice" and not any("signature=" in link for link in links.values())
    assert "<optgroup" not in html  # no failing signed links when nothing is signed


def test_error_page_carries_what_the_opener_needs_and_nothing_else(settings_env):
    client = create_app({**settings_env, "FRONTEND_ORIGINS": APP}).test_client()
    expired = f"/connect/alice?expires={int(time.time()) - 5}&signature=" + "0" * 64
    response = client.get(expired, headers={"Accept": "text/html"})
    html = response.get_data(as_text=True)
    assert response.status_code in (401, 403)  # a bad signature is refused before its expiry is looked at
    assert attr(html, "error", "data-notify-origins") == APP
    assert attr(html, "error", "data-status") == str(response.status_code)
    assert attr(html, "try-again", "data-retry") == "back"
    assert 'lang="en"' in html and "<h1" in html and 'role="alert"' in html
    assert "0" * 64 not in html and SIGNING_SECRET not in html
    assert_csp_ready(html)


def test_error_page_for_a_passing_failure_retries_in_place(client, emulator):
    emulator.set_knobs(fault="503", fault_count=-1)
    response = client.get(signed_path("alice", SIGNING_SECRET, 300), headers={"Accept": "text/html"})
    html = response.get_data(as_text=True)
    assert response.status_code == 503
    assert attr(html, "try-again", "data-retry") == "reload"  # the same signed link works once Ayrshare is back
    assert "We could not open the linking page" in html and API_KEY not in html


def test_connect_js_is_an_importable_module_for_any_origin(client):
    response = client.get("/static/connect.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    source = response.get_data(as_text=True)
    assert "export function connectSocialAccounts" in source and "export function resumeSameTab" in source
    assert client.get("/static/pages.css").headers.get("Access-Control-Allow-Origin") is None


def test_favicon_is_a_same_origin_svg_and_favicon_ico_points_to_it(client):
    page = client.get("/done").get_data(as_text=True)
    assert '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">' in page
    icon = client.get("/static/favicon.svg")
    assert icon.status_code == 200 and icon.mimetype == "image/svg+xml" and b"<svg" in icon.data
    legacy = client.get("/favicon.ico")
    assert legacy.status_code == 301 and legacy.headers["Location"] == "/static/favicon.svg"


# -- the error pages' words -------------------------------------------------------------------------------------------
def text_of(html: str, element_id: str) -> str:
    found = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', html, re.S)
    assert found, f"no element #{element_id}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "", found.group(2))).strip()


def assert_one_plain_sentence(sentence: str, code: str) -> None:
    assert re.fullmatch(r"[A-Z][^.!?]*[.!?]", sentence.replace("'s", "").replace("n't", "")), sentence
    assert "(" not in sentence and ")" not in sentence and "_" not in sentence, sentence
    assert code not in sentence


BROWSER_ERRORS = [
    errors.Unauthenticated(),
    errors.Forbidden(),
    errors.UnknownUser(),
    errors.RateLimited(),
    errors.UpstreamRefused(),
    errors.UpstreamUnavailable(),
    errors.UpstreamTimeout(),
    errors.ServiceError(),
    *[errors.Forbidden(code=code) for code in ("link_expired", "bad_signature", "options_not_signed", "wrong_user")],
    *[errors.Unauthenticated(code=code) for code in ("bad_token", "token_expired")],
    *[errors.BadRequest(code=code) for code in ("bad_redirect", "bad_allowed_social", "bad_user_id")],
    errors.UpstreamUnavailable(code="upstream_circuit_open"),
    errors.UpstreamUnavailable(code="database_unavailable"),
    errors.UpstreamUnavailable(code="profile_creation_in_progress"),
]


@pytest.mark.parametrize("error", BROWSER_ERRORS, ids=lambda error: error.code)
@pytest.mark.parametrize("generic", [False, True], ids=["link", "generic"])
def test_every_error_page_says_what_happened_and_what_to_do_in_one_sentence_each(error, generic):
    wording = page_wording(error, generic)
    assert_one_plain_sentence(wording.happened, error.code)
    assert_one_plain_sentence(wording.todo, error.code)
    assert wording.kind == ("page" if generic else "retry" if error.status >= 500 or error.status == 429 else "link")
    if not generic and error.code == "database_unavailable":
        assert "Ayrshare" not in wording.happened  # only Ayrshare's own failures are put on Ayrshare


@pytest.mark.parametrize(
    ("path", "code", "kind"),
    [
        (f"/connect/alice?expires={int(time.time()) - 5}", "bad_signature", "link"),  # no signature: 401
        ("/connect/alice", "auth_required", "link"),
        ("/connect/nobody?__signed__", "unknown_user", "link"),
        ("/connect/alice?__expired__", "link_expired", "link"),
    ],
)
def test_the_rendered_error_page_keeps_the_code_out_of_its_sentences(client, path, code, kind):
    if "__signed__" in path:
        path = signed_path("nobody", SIGNING_SECRET, 300)
    elif "__expired__" in path:
        path = signed_path("alice", SIGNING_SECRET, 60, now=time.time() - 120)
    html = client.get(path, headers={"Accept": "text/html"}).get_data(as_text=True)
    assert attr(html, "error", "data-code") == code and attr(html, "error", "data-kind") == kind
    assert text_of(html, "error-code") == code  # machine-readable, and in the small print
    for sentence in (text_of(html, "error-message"), text_of(html, "error-hint")):
        assert_one_plain_sentence(sentence, code)


def test_an_unknown_address_gets_a_generic_404_page_that_does_not_talk_about_links(client):
    response = client.get("/no/such/page", headers={"Accept": "text/html"})
    html = response.get_data(as_text=True)
    assert response.status_code == 404 and response.mimetype == "text/html"
    assert attr(html, "error", "data-kind") == "page" and attr(html, "error", "data-code") == "not_found"
    assert text_of(html, "title") == "Page not found"
    assert "<title>Page not found" in html
    main = text_of(html, "error")
    assert "link" not in main.lower() and "connect" not in main.lower(), main
    assert attr(html, "try-again", "data-retry") == "back"
    assert_csp_ready(html)
    # A JSON caller still gets the JSON body.
    assert client.get("/no/such/page", headers={"Accept": "application/json"}).json["error"]["code"] == "not_found"
