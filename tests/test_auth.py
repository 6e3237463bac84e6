"""Who may ask for whose link: a table of hostile credentials, each refused with 401/403 and no upstream call."""

from __future__ import annotations

import time

import pytest

from service.auth import Authenticator, PresentedCredentials, check_signature, sign
from service.config import Settings
from service.errors import Forbidden, Unauthenticated
from tests.conftest import INTERNAL_TOKEN, SIGNING_SECRET

NOW = 1_800_000_000
OTHER_SECRET = "another-secret-of-the-right-length-0123456789"


def good(user="alice", expires=NOW + 300, secret=SIGNING_SECRET):
    return {"expires": str(expires), "signature": sign(user, expires, secret)}


# (description, user asked for, query, expected exception, expected code)
HOSTILE_SIGNED_LINKS = [
    ("no credentials at all", "alice", {}, Unauthenticated, "auth_required"),
    (
        "signature without expires",
        "alice",
        {"signature": good()["signature"]},
        Unauthenticated,
        "bad_signature",
    ),
    ("expires without signature", "alice", {"expires": str(NOW + 300)}, Unauthenticated, "bad_signature"),
    (
        "empty signature",
        "alice",
        {"expires": str(NOW + 300), "signature": ""},
        Unauthenticated,
        "bad_signature",
    ),
    ("made for another user", "alice", good(user="bob"), Forbidden, "bad_signature"),
    ("user id differs in case", "Alice", good(user="alice"), Forbidden, "bad_signature"),
    ("signed with another secret", "alice", good(secret=OTHER_SECRET), Forbidden, "bad_signature"),
    (
        "expiry changed after signing",
        "alice",
        {**good(), "expires": str(NOW + 301)},
        Forbidden,
        "bad_signature",
    ),
    ("expired", "alice", good(expires=NOW - 1), Forbidden, "link_expired"),
    ("expires exactly now", "alice", good(expires=NOW), Forbidden, "link_expired"),
    ("valid for far too long", "alice", good(expires=NOW + 10 * 86400), Forbidden, "bad_signature"),
    ("negative expiry", "alice", {"expires": "-5", "signature": "00"}, Forbidden, "bad_signature"),
    (
        "expiry in milliseconds overflow",
        "alice",
        {"expires": "9" * 40, "signature": "00"},
        Forbidden,
        "bad_signature",
    ),
    (
        "expiry with spaces",
        "alice",
        {"expires": f" {NOW + 300}", "signature": "00"},
        Forbidden,
        "bad_signature",
    ),
    (
        "expiry as float",
        "alice",
        {"expires": f"{NOW + 300}.0", "signature": "00"},
        Forbidden,
        "bad_signature",
    ),
    ("unicode digits in expiry", "alice", {"expires": "١٢٣", "signature": "00"}, Forbidden, "bad_signature"),
    (
        "truncated signature",
        "alice",
        {**good(), "signature": good()["signature"][:-2]},
        Forbidden,
        "bad_signature",
    ),
    (
        "signature with junk appended",
        "alice",
        {**good(), "signature": good()["signature"] + "00"},
        Forbidden,
        "bad_signature",
    ),
    ("non-hex signature", "alice", {**good(), "signature": "zz" * 32}, Forbidden, "bad_signature"),
    ("non-ascii signature", "alice", {**good(), "signature": "é" * 64}, Forbidden, "bad_signature"),
    (
        "signature of the secret alone",
        "alice",
        {**good(), "signature": sign("", 0, SIGNING_SECRET)},
        Forbidden,
        "bad_signature",
    ),
]


@pytest.mark.parametrize(
    ("case", "user", "query", "error", "code"), HOSTILE_SIGNED_LINKS, ids=[c[0] for c in HOSTILE_SIGNED_LINKS]
)
def test_hostile_signed_links_are_refused(case, user, query, error, code):
    authenticator = _authenticator()
    with pytest.raises(error) as caught:
        authenticator.identify(user, PresentedCredentials(query=query), now=NOW)
    assert caught.value.code == code


def test_a_good_signed_link_names_its_user():
    caller = check_signature("alice", good(), SIGNING_SECRET, max_ttl=86400, now=NOW)
    assert caller.kind == "signed" and caller.user == "alice"


def test_uppercase_hex_signature_is_accepted():
    query = {**good(), "signature": good()["signature"].upper()}
    assert check_signature("alice", query, SIGNING_SECRET, max_ttl=86400, now=NOW).user == "alice"


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer wrong-token",
        f"Bearer {INTERNAL_TOKEN}x",
        f"Bearer {INTERNAL_TOKEN[:-1]}",
        "Bearer  ",
    ],
)
def test_wrong_internal_tokens_are_refused(authorization):
    with pytest.raises(Unauthenticated):
        _authenticator().identify("alice", PresentedCredentials(authorization=authorization), now=NOW)


def test_a_bad_bearer_token_does_not_fall_through_to_a_valid_signature():
    presented = PresentedCredentials(authorization="Bearer wrong-token", query=good())
    with pytest.raises(Unauthenticated):
        _authenticator().identify("alice", presented, now=NOW)


def test_non_bearer_authorization_schemes_are_ignored():
    presented = PresentedCredentials(authorization=f"Basic {INTERNAL_TOKEN}")
    with pytest.raises(Unauthenticated):
        _authenticator().identify("alice", presented, now=NOW)


def test_internal_token_opens_any_user():
    caller = _authenticator().identify("bob", PresentedCredentials(authorization=f"bearer {INTERNAL_TOKEN}"), now=NOW)
    assert caller.kind == "internal" and caller.user is None


def _authenticator() -> Authenticator:
    settings = Settings(
        api_key="unused",
        domain="unused",
        base_url="https://api.ayrshare.com/api",
        signing_secret=SIGNING_SECRET,
        signed_link_max_ttl=86400,
        internal_api_token=INTERNAL_TOKEN,
    )
    return Authenticator(settings)


# -- over HTTP: every refusal is 401/403 and costs no Ayrshare call ------------------------------------------------
@pytest.mark.parametrize(
    ("case", "user", "query", "error", "code"), HOSTILE_SIGNED_LINKS, ids=[c[0] for c in HOSTILE_SIGNED_LINKS]
)
def test_refusals_over_http_never_reach_ayrshare(client, emulator, case, user, query, error, code):
    now = int(time.time())
    shifted = dict(query)
    if "expires" in shifted and shifted["expires"].isdigit() and len(shifted["expires"]) <= 12:
        # Re-base the table's times on the real clock, re-signing only where the case had a valid signature.
        delta = int(shifted["expires"]) - NOW
        valid = shifted.get("signature") == sign(
            user if case != "made for another user" else "bob", int(shifted["expires"]), SIGNING_SECRET
        )
        shifted["expires"] = str(now + delta)
        if valid:
            shifted["signature"] = sign(user if case != "made for another user" else "bob", now + delta, SIGNING_SECRET)
    response = client.get(f"/connect/{user}", query_string=shifted, headers={"Accept": "application/json"})
    assert response.status_code == error.status
    assert response.json["error"]["code"] == code
    assert emulator.calls() == 0


# -- signed options: redirect and allowedSocial are part of the signed message when given -------------------------
REDIRECT = "https://app.example.com/done"


def signed_with(options, user="alice", expires=NOW + 300):
    return {"expires": str(expires), "signature": sign(user, expires, SIGNING_SECRET, options), **options}


@pytest.mark.parametrize(
    "options",
    [{"redirect": REDIRECT}, {"allowedSocial": "facebook,tiktok"}, {"redirect": REDIRECT, "allowedSocial": "x"}],
)
def test_options_signed_with_the_link_are_accepted(options):
    assert check_signature("alice", signed_with(options), SIGNING_SECRET, max_ttl=900, now=NOW).user == "alice"


def test_the_signed_message_without_options_is_unchanged():
    # Backends that sign "<user>:<expires>" keep working exactly as before.
    import hashlib
    import hmac

    expected = hmac.new(SIGNING_SECRET.encode(), f"alice:{NOW + 300}".encode(), hashlib.sha256).hexdigest()
    assert sign("alice", NOW + 300, SIGNING_SECRET) == sign("alice", NOW + 300, SIGNING_SECRET, {}) == expected
    assert check_signature("alice", good(), SIGNING_SECRET, max_ttl=900, now=NOW).user == "alice"


def test_the_signed_message_with_options_is_documented_form():
    import hashlib
    import hmac

    message = f"alice:{NOW + 300}\nallowedSocial=facebook\nredirect={REDIRECT}"
    expected = hmac.new(SIGNING_SECRET.encode(), message.encode(), hashlib.sha256).hexdigest()
    assert sign("alice", NOW + 300, SIGNING_SECRET, {"redirect": REDIRECT, "allowedSocial": "facebook"}) == expected


OPTION_TAMPERING = [
    ("redirect added to a link signed without options", {**good(), "redirect": REDIRECT}),
    ("allowedSocial added to a link signed without options", {**good(), "allowedSocial": "facebook"}),
    ("redirect changed", {**signed_with({"redirect": REDIRECT}), "redirect": "https://app.example.com/other"}),
    ("allowedSocial widened", {**signed_with({"allowedSocial": "facebook"}), "allowedSocial": "facebook,tiktok"}),
    ("signed option dropped", {k: v for k, v in signed_with({"redirect": REDIRECT}).items() if k != "redirect"}),
    (
        "one option smuggled inside another",
        {**signed_with({"redirect": REDIRECT, "allowedSocial": "x"}), "allowedSocial": f"x\nredirect={REDIRECT}"},
    ),
]


@pytest.mark.parametrize(("case", "query"), OPTION_TAMPERING, ids=[c[0] for c in OPTION_TAMPERING])
def test_options_that_differ_from_the_signed_ones_are_refused(case, query):
    with pytest.raises(Forbidden) as caught:
        check_signature("alice", query, SIGNING_SECRET, max_ttl=900, now=NOW)
    expected = "bad_signature" if case == "signed option dropped" else "options_not_signed"
    assert caught.value.code == expected


def test_signed_options_over_http(settings_env, emulator):
    from service import create_app
    from service.auth import signed_path

    app = create_app({**settings_env, "REDIRECT_ALLOWED_HOSTS": "app.example.com"})
    client = app.test_client()
    options = {"redirect": REDIRECT}
    ok = client.get(signed_path("alice", SIGNING_SECRET, options=options), headers={"Accept": "application/json"})
    assert ok.status_code == 200
    added = client.get(
        signed_path("bob", SIGNING_SECRET) + f"&redirect={REDIRECT}", headers={"Accept": "application/json"}
    )
    assert added.status_code == 403 and added.json["error"]["code"] == "options_not_signed"


def test_signed_links_live_15_minutes_at_most_by_default(settings_env):
    from service.config import load_settings

    assert load_settings(settings_env).signed_link_max_ttl == 900
