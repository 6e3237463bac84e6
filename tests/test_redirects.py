"""Where a user may be sent: the `redirect` allowlist, `allowedSocial`, and the linking hosts we redirect to.

Modelled on oauth2-proxy's redirect tests: one small validator, a long table of hostile cases that must each be
refused on their own, oauth2-proxy's corpus of 559 open-redirect payloads, and a short table of what must pass (so a
validator that refuses everything cannot pass this file).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, unquote, unquote_plus

import pytest

from service.auth import signed_path
from service.config import SUPPORTED_NETWORKS, load_settings
from service.errors import BadRequest
from service.links.options import resolve_allowed_social
from service.upstream import AllowedLinkHosts, AyrshareClient
from service.urls import RedirectAllowlist, is_allowed_redirect
from tests.conftest import SIGNING_SECRET
from tests.support.corpora import OPEN_REDIRECTS

CORPUS = OPEN_REDIRECTS
CORPUS_HOST = "www.whitelisteddomain.tld"
JSON = {"Accept": "application/json"}

ALLOW = RedirectAllowlist.parse(["app.example.com", "app.example.com:8443", ".partner.example.org"])

# What must pass: exact host, explicit port, subdomain rule, query (origin=true) and fragment kept.
GOOD_REDIRECTS = [
    "https://app.example.com",
    "https://app.example.com/",
    "https://app.example.com/done",
    "https://app.example.com/done?origin=true",
    "https://app.example.com/done?origin=true&x=1#top",
    "https://app.example.com:443/done",
    "https://app.example.com:8443/done",
    "https://APP.example.com/done",
    "https://partner.example.org/done",
    "https://a.b.partner.example.org/done",
    "https://app.example.com/@evil.com",  # the host is app.example.com; '@' in a path is just a path
]

# (why it is hostile, URL). Each must be refused by the validator alone.
HOSTILE_REDIRECTS = [
    ("plain http", "http://app.example.com/done"),
    ("scheme in capitals", "HTTPS://app.example.com/done"),
    ("javascript scheme", "javascript:alert(1)"),
    ("javascript disguised with host", "javascript://app.example.com/%0aalert(1)"),
    ("data URL", "data:text/html,<script>alert(1)</script>"),
    ("scheme-relative", "//app.example.com/done"),
    ("scheme-relative to elsewhere", "//evil.com"),
    ("path only", "/done"),
    ("relative path", "done"),
    ("empty", ""),
    ("scheme without slashes", "https:app.example.com/done"),
    ("scheme with one slash", "https:/app.example.com/done"),
    ("three slashes", "https:///app.example.com/done"),
    ("backslash after scheme", "https:\\\\evil.com"),
    ("backslash authority", "https://app.example.com\\@evil.com"),
    ("backslash in path", "https://app.example.com/\\evil.com"),
    ("userinfo with allowed host", "https://app.example.com@evil.com/"),
    ("userinfo with password", "https://app.example.com:pass@evil.com/"),
    ("userinfo before allowed host", "https://evil.com@app.example.com/"),
    ("other host", "https://evil.com/done"),
    ("allowed host as subdomain of evil", "https://app.example.com.evil.com/done"),
    ("allowed host as suffix", "https://evilapp.example.com/done"),
    ("exact entry is not a subdomain rule", "https://x.app.example.com/done"),
    ("suffix rule without dot boundary", "https://evilpartner.example.org/done"),
    ("trailing dot", "https://app.example.com./done"),
    ("port not listed", "https://app.example.com:8080/done"),
    ("port zero", "https://app.example.com:0/done"),
    ("port out of range", "https://app.example.com:70000/done"),
    ("subdomain rule on another port", "https://a.partner.example.org:8443/done"),
    ("percent-encoded host", "https://app%2eexample.com/done"),
    ("encoded slash in authority", "https://evil.com%2f@app.example.com/"),
    ("tab in scheme", "ht\ttps://app.example.com/"),
    ("tab in host", "https://app.exa\tmple.com/"),
    ("newline in path", "https://app.example.com/\nLocation: https://evil.com"),
    ("carriage return", "https://app.example.com/\r\n"),
    ("leading space", " https://app.example.com/"),
    ("trailing space", "https://app.example.com/ "),
    ("null byte", "https://app.example.com\x00.evil.com/"),
    ("unicode dot in host", "https://app.example\u3002com/"),
    ("unicode homograph", "https://аpp.example.com/"),  # Cyrillic 'а'
    ("Kelvin sign, which lower-cases to k", "https://\u212a.partner.example.org/done"),
    ("fullwidth solidus", "https://evil.com\uff0fapp.example.com"),
    ("IPv6 literal", "https://[::1]/done"),
    ("IP address not listed", "https://127.0.0.1/done"),
    ("decimal IP", "https://2130706433/done"),
    ("question mark authority", "https://evil.com?.app.example.com/"),
    ("hash authority", "https://evil.com#.app.example.com/"),
    ("semicolon in host", "https://evil.com;app.example.com/"),
    ("too long", "https://app.example.com/" + "a" * 2100),
    ("label too long", "https://" + "a" * 64 + ".partner.example.org/"),
]


@pytest.mark.parametrize("url", GOOD_REDIRECTS)
def test_allowed_redirects_pass(url):
    assert is_allowed_redirect(url, ALLOW)


@pytest.mark.parametrize(("case", "url"), HOSTILE_REDIRECTS, ids=[c[0] for c in HOSTILE_REDIRECTS])
def test_hostile_redirects_are_refused(case, url):
    assert not is_allowed_redirect(url, ALLOW)


def test_every_open_redirect_payload_in_the_corpus_is_refused():
    entries = CORPUS.read_text(encoding="utf-8").splitlines()
    assert len(entries) == 559  # the first payload is the empty string
    allow = RedirectAllowlist.parse([CORPUS_HOST])
    assert is_allowed_redirect(f"https://{CORPUS_HOST}/", allow)  # the corpus host itself is allowed
    accepted = [
        entry
        for entry in entries
        for candidate in {entry, unquote(entry), unquote_plus(entry)}
        if is_allowed_redirect(candidate, allow)
    ]
    assert accepted == []


def test_no_allowlist_means_no_query_redirect_at_all():
    assert not is_allowed_redirect("https://app.example.com/", RedirectAllowlist.parse([]))


def test_plain_http_only_for_an_explicit_loopback_origin():
    allow = RedirectAllowlist.parse(["http://127.0.0.1:8000"])
    assert is_allowed_redirect("http://127.0.0.1:8000/done", allow)
    assert not is_allowed_redirect("http://127.0.0.1:8001/done", allow)
    assert not is_allowed_redirect("https://127.0.0.1:8000/done", allow)
    assert not is_allowed_redirect("http://localhost:8000/done", allow)


@pytest.mark.parametrize(
    "entry",
    [
        "http://app.example.com",  # plain http on a public host
        "https://app.example.com/path",
        "https://user@app.example.com",
        "*.example.com",
        ".com",
        "app.example.com:99999",
        "https://app.example.com?x",
        "",
    ],
)
def test_bad_allowlist_entries_are_refused(entry):
    with pytest.raises(ValueError) as caught:
        RedirectAllowlist.parse([entry])
    assert "entry 1" in str(caught.value) and (not entry or entry not in str(caught.value))


# -- allowedSocial ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "configured", "expected"),
    [
        (None, (), ()),
        (None, ("twitter", "facebook"), ("facebook", "twitter")),
        ("facebook", (), ("facebook",)),
        ("Facebook, TWITTER", (), ("facebook", "twitter")),
        ("facebook,facebook", (), ("facebook",)),
        ("facebook,tiktok", ("facebook", "twitter"), ("facebook",)),
    ],
)
def test_allowed_social_is_validated_and_narrowed(requested, configured, expected):
    assert resolve_allowed_social(requested, SUPPORTED_NETWORKS, configured) == expected


@pytest.mark.parametrize(
    ("requested", "configured"),
    [
        ("myspace", ()),
        ("facebook,myspace", ()),
        ("", ()),
        (",,", ()),
        ("face book", ()),
        ("facebook;twitter", ()),
        ("tiktok", ("facebook",)),  # supported, but not enabled for this service
        ("x" * 300, ()),
        ("__proto__", ()),
    ],
)
def test_bad_allowed_social_is_a_400(requested, configured):
    with pytest.raises(BadRequest) as caught:
        resolve_allowed_social(requested, SUPPORTED_NETWORKS, configured)
    assert caught.value.code == "bad_allowed_social"


# -- over HTTP: refusals are 400 and cost no Ayrshare call; allowed options reach Ayrshare intact ------------------
@pytest.fixture
def redirect_client(settings_env):
    from service import create_app

    env = {**settings_env, "REDIRECT_ALLOWED_HOSTS": f"app.example.com,{CORPUS_HOST}", "AYRSHARE_ALLOWED_SOCIAL": ""}
    return create_app(env).test_client()


def _get(client, query):
    # Signed with its options, as a backend must sign them (tests/test_auth.py covers unsigned options).
    path, _, signature = signed_path("alice", SIGNING_SECRET, options=query).partition("?")
    return client.get(path, query_string={**dict(parse_qsl(signature)), **query}, headers=JSON)


def test_hostile_redirects_over_http_are_400_and_never_reach_ayrshare(redirect_client, emulator):
    entries = [e for e in CORPUS.read_text(encoding="utf-8").split("\n") if e]
    payloads = [url for _, url in HOSTILE_REDIRECTS] + [unquote_plus(e) for e in entries]
    for payload in payloads:
        response = _get(redirect_client, {"redirect": payload})
        if "\n" in payload or "\r" in payload:  # no signature covers a line break in an option
            assert response.status_code == 403 and response.json["error"]["code"] == "options_not_signed", payload
            continue
        assert response.status_code == 400, payload
        assert response.json["error"]["code"] == "bad_redirect"
        assert payload not in response.get_data(as_text=True) or not payload
    assert emulator.calls() == 0


def test_redirect_given_twice_is_refused(redirect_client, emulator):
    # Even signed as the service reads a repeated parameter (joined with a comma), a second redirect is refused.
    path = signed_path("alice", SIGNING_SECRET, options={"redirect": "https://app.example.com/,https://evil.com/"})
    path = path.split("&redirect=")[0]
    response = redirect_client.get(path + "&redirect=https://app.example.com/&redirect=https://evil.com/", headers=JSON)
    assert response.status_code == 400 and emulator.calls() == 0


def test_allowed_redirect_reaches_ayrshare_byte_for_byte_with_origin_true(redirect_client, emulator):
    target = "https://app.example.com/linked?origin=true"
    response = _get(redirect_client, {"redirect": target})
    assert response.status_code == 200
    assert emulator.stats()["requests"][-1]["options"]["redirect"] == target


def test_default_redirect_is_used_when_the_query_has_none(settings_env, emulator):
    from service import create_app

    client = create_app({**settings_env, "AYRSHARE_REDIRECT": "https://app.example.com/done?origin=true"}).test_client()
    assert _get(client, {}).status_code == 200
    assert emulator.stats()["requests"][-1]["options"]["redirect"] == "https://app.example.com/done?origin=true"


def test_unknown_network_is_400_and_never_reaches_ayrshare(redirect_client, emulator):
    response = _get(redirect_client, {"allowedSocial": "facebook,myspace"})
    assert response.status_code == 400 and response.json["error"]["code"] == "bad_allowed_social"
    assert emulator.calls() == 0


def test_allowed_social_reaches_ayrshare_narrowed(settings_env, emulator):
    from service import create_app

    client = create_app({**settings_env, "AYRSHARE_ALLOWED_SOCIAL": "facebook,twitter"}).test_client()
    assert _get(client, {"allowedSocial": "twitter,tiktok"}).status_code == 200
    assert emulator.stats()["requests"][-1]["options"]["allowedSocial"] == ["twitter"]


# -- LINK_ALLOWED_HOSTS: the only places the service itself redirects to -------------------------------------------
LINK_HOSTS = AllowedLinkHosts.parse(("profile.ayrshare.com", "http://127.0.0.1:8001"))
GOOD_LINKS = [
    "https://profile.ayrshare.com?domain=ACME&jwt=abc",
    "https://profile.ayrshare.com/?jwt=abc&domain=ACME",
    "https://PROFILE.ayrshare.com/?jwt=abc",
    "http://127.0.0.1:8001/?jwt=abc",
]
HOSTILE_LINKS = [
    ("plain http to the real host", "http://profile.ayrshare.com/?jwt=abc"),
    ("another host", "https://evil.com/?jwt=abc"),
    ("look-alike subdomain", "https://profile.ayrshare.com.evil.com/?jwt=abc"),
    ("sibling host", "https://app.ayrshare.com/?jwt=abc"),
    ("userinfo", "https://profile.ayrshare.com@evil.com/?jwt=abc"),
    ("userinfo before the real host", "https://evil.com@profile.ayrshare.com/?jwt=abc"),
    ("unexpected port", "https://profile.ayrshare.com:8443/?jwt=abc"),
    ("emulator origin on https", "https://127.0.0.1:8001/?jwt=abc"),
    ("emulator on another port", "http://127.0.0.1:8002/?jwt=abc"),
    ("scheme-relative", "//profile.ayrshare.com/?jwt=abc"),
    ("javascript", "javascript:alert(1)//profile.ayrshare.com"),
    ("data", "data:text/html,profile.ayrshare.com"),
    ("relative", "/?jwt=abc"),
    ("empty", ""),
]


@pytest.mark.parametrize("url", GOOD_LINKS)
def test_linking_urls_on_allowed_hosts_pass(url):
    assert LINK_HOSTS.allows(url)


@pytest.mark.parametrize(("case", "url"), HOSTILE_LINKS, ids=[c[0] for c in HOSTILE_LINKS])
def test_linking_urls_elsewhere_are_refused(case, url):
    assert not LINK_HOSTS.allows(url)


UNSERVABLE_LINKS = [
    ("a space", "https://profile.ayrshare.com/?jwt=a b"),
    ("a tab", "https://profile.ayrshare.com/?jwt=a\tb"),
    ("a line break (header splitting)", "https://profile.ayrshare.com/?jwt=a\r\nSet-Cookie:x=1"),
    ("a null byte", "https://profile.ayrshare.com/?jwt=a\x00"),
    ("DEL", "https://profile.ayrshare.com/?jwt=a\x7f"),
    ("a unit separator", "https://profile.ayrshare.com/?jwt=a\x1f"),
    ("no jwt", "https://profile.ayrshare.com/?domain=ACME"),
    ("two jwts", "https://profile.ayrshare.com/?jwt=a&jwt=b"),
    ("a host outside the allowlist", "https://evil.com/?jwt=abc"),
]


@pytest.mark.parametrize(("case", "url"), UNSERVABLE_LINKS, ids=[c[0] for c in UNSERVABLE_LINKS])
def test_a_linking_url_with_control_characters_or_a_wrong_token_count_is_never_served(settings_env, case, url):
    ayrshare = AyrshareClient(
        load_settings({**settings_env, "AYRSHARE_LINK_FLOW": "jwt", "LINK_ALLOWED_HOSTS": "profile.ayrshare.com"})
    )
    assert ayrshare.servable("https://profile.ayrshare.com/?domain=ACME&jwt=abc")
    assert not ayrshare.servable(url)


def test_upstream_answer_on_a_foreign_host_is_502_never_a_redirect(client, emulator):
    emulator.set_knobs(fault="foreign_host")
    response = client.get(signed_path("alice", SIGNING_SECRET))
    assert response.status_code == 502
    assert "Location" not in response.headers


def test_the_vendored_corpus_is_the_shared_one_unchanged():
    from tests.support.corpora import SHARED_OPEN_REDIRECTS

    assert len(CORPUS.read_text(encoding="utf-8").splitlines()) == 559
    if SHARED_OPEN_REDIRECTS.exists():  # beside a checkout in the team's workspace; a plain clone has only the copy
        assert CORPUS.read_bytes() == SHARED_OPEN_REDIRECTS.read_bytes()
