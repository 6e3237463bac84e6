"""The social-account linking page that generated URLs open (`GET <link-base>?domain=...&jwt=...` or `?session=...`).

A JWT is verified the way the vendor's page must (RS256 against the key registered for `domain`, `exp` enforced); a
Link Session token is looked up, refused once revoked or expired, and each open counted. The page links nothing; it
shows which profile the URL opened and implements the documented "Done" behaviour (redirect, or the opener's).
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

import jwt
from flask import Blueprint, Response, current_app, render_template_string, request

from emulator.config import EmulatorConfig
from emulator.keys import verify_token
from emulator.state import EmulatorState

blueprint = Blueprint("linking_page", __name__)

# Flask autoescapes templates rendered from strings, so every interpolated value below is escaped.
# Data for the script travels in a JSON <script> block (tojson escapes <, >, & and ') rather than being
# spliced into code.
PAGE_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="referrer" content="no-referrer">
<title>Link social accounts (Ayrshare emulator)</title>
<style nonce="{{ nonce }}">
body { font-family: sans-serif; max-width: 40rem; margin: 3rem auto; }
.error { color: #a00; }
</style>
</head>
<body>
{% if error %}
<h1>Link unavailable</h1>
<p id="link-error" class="error" data-reason="{{ error }}">This linking URL is {{ error }}.
Ask the application for a new link.</p>
{% else %}
<h1>Link your social accounts</h1>
<p>User Profile: <strong id="profile-title">{{ title }}</strong></p>
<p>Profile Key: <code id="profile-key">{{ profile_key }}</code></p>
<p>Link valid until <time id="expires-at" datetime="{{ expires_at }}">{{ expires_at }}</time></p>
{% if allowed_social %}
<p>Networks offered:</p>
<ul id="allowed-social">{% for network in allowed_social %}<li>{{ network }}</li>{% endfor %}</ul>
{% else %}
<p id="allowed-social-default">Networks offered: all networks enabled for this profile.</p>
{% endif %}
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
</body>
</html>
"""


@blueprint.get("/")
def linking_page() -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    domain = request.args.get("domain", "")
    if "session" in request.args:
        return _session_page(config, state, domain, request.args.get("session", ""))
    token = request.args.get("jwt", "")

    if domain != config.domain or not token:
        return _render(status=401, error="invalid")
    try:
        claims = verify_token(token, config.public_key, domain)
    except jwt.ExpiredSignatureError:
        return _render(status=401, error="expired")
    except jwt.InvalidTokenError:
        return _render(status=401, error="invalid")

    profile_key = str(claims["profileKey"])
    options = state.link_options(token)
    redirect = _safe_redirect(options.redirect if options else None)
    return _render(
        status=200,
        profile_key=profile_key,
        title=config.profile_title(profile_key) or profile_key,
        allowed_social=options.allowed_social if options else (),
        expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC).isoformat(),
        done_config={"redirect": redirect, "redirectOpener": _redirects_opener(redirect)},
    )


def _session_page(config: EmulatorConfig, state: EmulatorState, domain: str, token: str) -> Response:
    if domain != config.domain or not token:
        return _render(status=401, error="invalid")
    outcome, session = state.open_session(token, time.time())
    if outcome == "revoked":
        return _render(status=410, error="revoked")
    if outcome == "expired":
        return _render(status=401, error="expired")
    if session is None:
        return _render(status=401, error="invalid")
    redirect = _safe_redirect(session.redirect)
    return _render(
        status=200,
        profile_key=session.profile_key,
        title=config.profile_title(session.profile_key) or session.profile_key,
        allowed_social=session.allowed_social,
        expires_at=datetime.fromtimestamp(int(session.expires_at), UTC).isoformat(),
        done_config={"redirect": redirect, "redirectOpener": _redirects_opener(redirect)},
    )


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
    html = render_template_string(PAGE_TEMPLATE, nonce=nonce, **context)
    response = Response(html, status=status, mimetype="text/html")
    # A JWT URL carries the API key in the token, a session URL a bearer token: keep both out of caches and Referers.
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    # Social networks refuse to be framed, so the real page only works top-level; mirror that.
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    )
    return response
