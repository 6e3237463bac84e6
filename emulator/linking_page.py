"""The social-account linking page that generated URLs open (`GET <link-base>?domain=...&jwt=...` or `?session=...`).

A JWT is verified the way the vendor's page must (RS256 against the key registered for `domain`, `exp` enforced); a
Link Session token is looked up, refused once revoked or expired, and each open counted. It shows which profile the
URL opened, a Link/Unlink button (a plain form, no OAuth) per offered network, which changes what `GET /api/user`
answers and sends the profile's `social` webhook, and implements the documented "Done" behaviour (redirect, or the
opener's).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs, quote, urlencode, urlsplit

import jwt
from flask import Blueprint, Response, current_app, redirect, render_template_string, request

from emulator import webhooks
from emulator.config import EmulatorConfig
from emulator.keys import verify_token
from emulator.profiles_api import NETWORKS, linked_entry
from emulator.state import EmulatorState

blueprint = Blueprint("linking_page", __name__)

# Flask autoescapes templates rendered from strings, so every interpolated value below is escaped.
# Data for the script travels in a JSON <script> block (tojson escapes <, >, & and ') rather than being
# spliced into code.
PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>Link social accounts (Ayrshare emulator)</title>
<link rel="icon" href="{{ icon }}">
<style nonce="{{ nonce }}">
:root { color-scheme: light; --ink: #1c2230; --muted: #5b6475; --line: #e2e6ee; --brand: #6d28d9; }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.5 system-ui, sans-serif; color: var(--ink); background: #f4f5f9; }
.bar { display: flex; align-items: center; gap: .6rem; padding: .7rem 1.25rem; background: #fff;
       border-bottom: 1px solid var(--line); font-weight: 600; }
.logo { width: 1.6rem; height: 1.6rem; border-radius: .4rem; background: var(--brand); }
.badge { margin-left: auto; padding: .15rem .6rem; border-radius: 1rem; background: #fff4d6; color: #7a5300;
         font-size: .8rem; font-weight: 600; }
main { max-width: 34rem; margin: 2rem auto; padding: 1.75rem; background: #fff; border: 1px solid var(--line);
       border-radius: .8rem; box-shadow: 0 6px 24px rgba(20, 30, 60, .06); }
h1 { margin: 0 0 .25rem; font-size: 1.35rem; }
.lead { margin: 0 0 1.25rem; color: var(--muted); }
.facts { margin: 0 0 1.25rem; padding: .75rem 1rem; border-radius: .5rem; background: #f7f8fb; font-size: .9rem; }
.facts p { margin: .15rem 0; }
.facts code { font-size: .85rem; }
#allowed-social { display: inline; margin: 0; padding: 0; list-style: none; }
#allowed-social li { display: inline-block; margin: 0 .25rem .25rem 0; padding: 0 .5rem; border-radius: 1rem;
                     background: #ece7fb; text-transform: capitalize; }
#networks { margin: 0 0 1.5rem; padding: 0; list-style: none; border: 1px solid var(--line); border-radius: .6rem; }
#networks li { display: flex; align-items: center; gap: .75rem; padding: .6rem .9rem; }
#networks li + li { border-top: 1px solid var(--line); }
.network-name { flex: 1; font-weight: 600; }
.state { font-size: .85rem; color: var(--muted); }
[data-linked="true"] .state { color: #0f6b34; }
form { margin: 0; }
button { font: inherit; cursor: pointer; border-radius: .4rem; }
#networks button { min-width: 5.5rem; padding: .3rem .8rem; border: 1px solid var(--brand); background: #fff;
                   color: var(--brand); }
#networks [data-linked="true"] button { border-color: #b9bfcc; color: var(--muted); }
#done { display: block; width: 100%; padding: .75rem; border: 0; background: var(--brand); color: #fff;
        font-size: 1.05rem; font-weight: 600; }
button:focus-visible { outline: 3px solid #f2a900; outline-offset: 2px; }
#done-message { margin: .75rem 0 0; text-align: center; color: var(--muted); }
.error { color: #a11d1d; }
.small { margin: 1.5rem 0 0; color: var(--muted); font-size: .8rem; text-align: center; }
</style>
</head>
<body>
<header class="bar"><span class="logo" aria-hidden="true"></span> Ayrshare
<span class="badge">Emulator: a test double, not the real Ayrshare</span></header>
<main>
{% if error %}
<h1>Link unavailable</h1>
<p id="link-error" class="error" data-reason="{{ error }}">This linking URL is {{ error }}.
Ask the application for a new link.</p>
{% else %}
<h1>Link your social accounts</h1>
<p class="lead">for <strong id="profile-title">{{ title }}</strong></p>
<div class="facts">
<p>Profile Key: <code id="profile-key">{{ profile_key }}</code></p>
<p>Link valid until <time id="expires-at" datetime="{{ expires_at }}">{{ expires_at }}</time></p>
{% if allowed_social %}
<div>Networks offered:
<ul id="allowed-social">{% for network in allowed_social %}<li>{{ network }}</li>{% endfor %}</ul></div>
{% else %}
<p id="allowed-social-default">Networks offered: all networks enabled for this profile.</p>
{% endif %}
</div>
<ul id="networks">{% for network in networks %}
<li id="network-{{ network.name }}" data-linked="{{ 'true' if network.linked else 'false' }}">
<span class="network-name">{{ network.label }}</span>
<span class="state">{{ "Linked" if network.linked else "Not linked" }}</span>
<form method="post" action="{{ action }}">
{% for name, value in form_fields.items() %}<input type="hidden" name="{{ name }}" value="{{ value }}">{% endfor %}
<input type="hidden" name="network" value="{{ network.name }}">
{% if network.linked %}<button id="unlink-{{ network.name }}" type="submit" name="op" value="unlink">Unlink</button>
{% else %}<button id="link-{{ network.name }}" type="submit" name="op" value="link">Link</button>{% endif %}
</form></li>{% endfor %}
</ul>
<button id="done" type="button">Done</button>
<p id="done-message" hidden>Done</p>
<script type="application/json" id="done-config">{{ done_config|tojson }}</script>
<script nonce="{{ nonce }}">
(function () {
  var config = JSON.parse(document.getElementById("done-config").textContent);
  document.getElementById("done").addEventListener("click", function () {
    if (!config.redirect) {
      document.getElementById("done-message").hidden = false;
      return;
    }
    if (config.redirectOpener && window.opener && !window.opener.closed) {
      try {
        window.opener.location = config.redirect;
        window.close();
        return;
      } catch (e) {
        /* opener unreachable: fall through and navigate this window instead */
      }
    }
    window.location.assign(config.redirect);
  });
})();
</script>
{% endif %}
<p class="small">The project's Ayrshare emulator: Link and Unlink change what its API reports, with no social
network involved.</p>
</main>
</body>
</html>
"""


# The page's icon, inline (img-src data:), so the browser does not ask the emulator for a /favicon.ico it lacks.
ICON = "data:image/svg+xml," + quote(
    '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
    '<rect width="16" height="16" rx="4" fill="#6d28d9"/></svg>'
)


# How the page names the networks whose API names are not simply capitalised.
LABELS = {"gmb": "Google Business Profile", "linkedin": "LinkedIn", "tiktok": "TikTok", "youtube": "YouTube"}


@dataclass(frozen=True)
class OpenedLink:
    """What a valid linking URL opened: the profile, the networks it may link and the page's Done settings."""

    profile_key: str
    allowed_social: tuple[str, ...]
    expires_at: float
    redirect: str | None
    form_fields: dict[str, str]  # what the page's forms send back to name this link again


@blueprint.get("/")
def linking_page() -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    opened = _open_link(config, state, request.args, count_use=True)
    if isinstance(opened, Response):
        return opened
    redirect_to = _safe_redirect(opened.redirect)
    return _render(
        status=200,
        profile_key=opened.profile_key,
        title=state.profile_title(config, opened.profile_key) or opened.profile_key,
        allowed_social=opened.allowed_social,
        networks=_networks(config, state, opened),
        action=request.path,
        form_fields=opened.form_fields,
        expires_at=datetime.fromtimestamp(int(opened.expires_at), UTC).isoformat(),
        done_config={"redirect": redirect_to, "redirectOpener": _redirects_opener(redirect_to)},
    )


@blueprint.post("/")
def linking_page_action() -> Response:
    """A Link or Unlink button: checks the link again (without counting a use), changes the profile's accounts and
    shows the page again (POST-redirect-GET: the reload counts as a use, as an OAuth return does)."""
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    opened = _open_link(config, state, request.form, count_use=False)
    if isinstance(opened, Response):
        return opened
    network, operation = request.form.get("network", ""), request.form.get("op", "")
    if network not in _offered(config, state, opened) or operation not in ("link", "unlink"):
        return _render(status=400, error="not offering this network")
    if operation == "link":
        title = state.profile_title(config, opened.profile_key) or opened.profile_key
        entry = linked_entry(title, network, time.time())
        state.link_account(opened.profile_key, network, entry)
        webhooks.notify_linking_page(opened.profile_key, "link", network, entry["displayName"])
    else:
        linked = {entry["platform"]: entry for entry in state.linked_accounts(opened.profile_key)}
        # A stale page's Unlink for a network no longer linked changes nothing, so it sends no event either.
        if state.unlink_account(opened.profile_key, network):
            webhooks.notify_linking_page(opened.profile_key, "unlink", network, linked[network]["displayName"])
    response = redirect(f"{request.path}?{urlencode(opened.form_fields)}", code=303)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _open_link(
    config: EmulatorConfig, state: EmulatorState, fields: Mapping[str, str], count_use: bool
) -> OpenedLink | Response:
    """The link a page request names (query or form fields), or the error page to answer instead."""
    domain = fields.get("domain", "")
    if "session" in fields:
        opened = _open_session(config, state, domain, fields.get("session", ""), count_use)
    else:
        opened = _open_jwt(config, state, domain, fields.get("jwt", ""))
    if isinstance(opened, OpenedLink) and state.profile_deleted(opened.profile_key):
        return _render(status=401, error="invalid")  # the profile was deleted after the link was made
    return opened


def _open_jwt(config: EmulatorConfig, state: EmulatorState, domain: str, token: str) -> OpenedLink | Response:
    if domain != config.domain or not token:
        return _render(status=401, error="invalid")
    try:
        claims = verify_token(token, config.public_key, domain)
    except jwt.ExpiredSignatureError:
        return _render(status=401, error="expired")
    except jwt.InvalidTokenError:
        return _render(status=401, error="invalid")
    options = state.link_options(token)
    return OpenedLink(
        profile_key=str(claims["profileKey"]),
        allowed_social=options.allowed_social if options else (),
        expires_at=float(claims["exp"]),
        redirect=options.redirect if options else None,
        form_fields={"domain": domain, "jwt": token},
    )


def _open_session(
    config: EmulatorConfig, state: EmulatorState, domain: str, token: str, count_use: bool
) -> OpenedLink | Response:
    if domain != config.domain or not token:
        return _render(status=401, error="invalid")
    outcome, session = state.open_session(token, time.time(), count_use=count_use)
    if outcome == "revoked":
        return _render(status=410, error="revoked")
    if outcome == "expired":
        return _render(status=401, error="expired")
    if session is None:
        return _render(status=401, error="invalid")
    return OpenedLink(
        profile_key=session.profile_key,
        allowed_social=session.allowed_social,
        expires_at=session.expires_at,
        redirect=session.redirect,
        form_fields={"session": token, "domain": domain},
    )


def _offered(config: EmulatorConfig, state: EmulatorState, opened: OpenedLink) -> tuple[str, ...]:
    """allowedSocial when the link names networks, else every network; never one the profile disables."""
    profile = state.profile(config, opened.profile_key)
    disabled = set(profile.disabled_social) if profile else set()
    wanted = [network for network in opened.allowed_social if network in NETWORKS] or list(NETWORKS)
    return tuple(network for network in dict.fromkeys(wanted) if network not in disabled)


def _networks(config: EmulatorConfig, state: EmulatorState, opened: OpenedLink) -> list[dict]:
    linked = {entry["platform"] for entry in state.linked_accounts(opened.profile_key)}
    return [
        {"name": network, "label": LABELS.get(network, network.capitalize()), "linked": network in linked}
        for network in _offered(config, state, opened)
    ]


def _safe_redirect(redirect: str | None) -> str | None:
    # The API accepts any string (the docs set no rule), but only web URLs are navigated to, so a
    # `javascript:` redirect cannot turn a demo page into script execution.
    if redirect and urlsplit(redirect).scheme in ("http", "https"):
        return redirect
    return None


def _redirects_opener(redirect: str | None) -> bool:
    """The vendor's rule: `origin=true` in the redirect's query means "redirect the opener window"."""
    if not redirect:
        return False
    return "true" in parse_qs(urlsplit(redirect).query).get("origin", [])


def _render(status: int, **context: object) -> Response:
    nonce = secrets.token_urlsafe(16)
    context.setdefault("error", None)
    context.setdefault("networks", [])
    context.setdefault("form_fields", {})
    html = render_template_string(PAGE_TEMPLATE, nonce=nonce, icon=ICON, **context)
    response = Response(html, status=status, mimetype="text/html")
    # A JWT URL carries the API key in the token, a session URL a bearer token: keep both out of caches and Referers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Social networks refuse to be framed, so the real page only works top-level; mirror that.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src data:; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )
    return response
