"""`/internal/v1/`: the API the team's backend calls, opened only by the bearer `INTERNAL_API_TOKEN`.

Revoke a user's links, read their current Link Session, send them the Connect Accounts email. The handlers lift the
request into plain values and call `UserLinks`; every answer carries `Cache-Control: no-store`.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, g, jsonify, request

from ..auth import require_internal_token
from ..links import UserLinks
from .errors import NO_STORE_HEADERS
from .routes import iso_time

bp = Blueprint("internal", __name__, url_prefix="/internal/v1")


def _user_links() -> UserLinks:
    return current_app.extensions["user_links"]


@bp.before_request
def _internal_token_only() -> None:
    g.auth = "internal"
    require_internal_token(request.headers.get("Authorization"), current_app.config["SETTINGS"].internal_api_token)


@bp.after_request
def _no_store(response: Response) -> Response:
    response.headers.update(NO_STORE_HEADERS)
    return response


@bp.delete("/users/<user>/links")
def revoke_links(user: str) -> Response:
    g.user = user
    revoked = _user_links().revoke(user)
    return jsonify(user=user, sessionsRevoked=revoked.sessions_revoked, linksDropped=revoked.links_dropped)


@bp.get("/users/<user>/link-session")
def link_session(user: str) -> Response:
    g.user = user
    return jsonify(_user_links().session_status(user))


@bp.post("/users/<user>/connect-email")
def connect_email(user: str) -> tuple[Response, int]:
    g.user = user
    sent = _user_links().send_connect_email(user, request.get_json(silent=True))
    expires = iso_time(sent.expires_at) if sent.expires_at else None
    return jsonify(emailSent=sent.email_sent, expiresAt=expires), 202
