"""`/internal/v1/`: the API the team's backend calls, opened only by the bearer `INTERNAL_API_TOKEN`.

The directory of users (get, attach, create, delete, list, linked accounts), and each user's links (revoke, Link
Session status, Connect Accounts email). The handlers lift the request into plain values and call `UserAdmin`,
`UserAccounts` or `UserLinks`; every answer carries `Cache-Control: no-store`.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, current_app, g, jsonify, request
from marshmallow import Schema, ValidationError

from ..auth import require_internal_token
from ..config.schema import SUPPORTED_NETWORKS
from ..errors import BadRequest, NotFound
from ..links import UserLinks
from ..profiles import UserAdmin, user_json, validate_user
from ..profiles.admin import DEFAULT_PAGE, MAX_PAGE
from ..timefmt import iso_time
from .errors import NO_STORE_HEADERS
from .schemas import (
    DELIVERY_STATES,
    EVENT_ID,
    MAX_DELIVERIES,
    DeliveriesQuerySchema,
    DeliveriesSchema,
    DeliverySchema,
    EmailSentSchema,
    LinkedAccountsSchema,
    LinkSessionSchema,
    RevokedSchema,
    UserPageSchema,
    UserSchema,
    UsersQuerySchema,
)

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
    body = {"user": user, "sessionsRevoked": revoked.sessions_revoked, "linksDropped": revoked.links_dropped}
    return jsonify(RevokedSchema().dump(body))


@bp.get("/users/<user>/link-session")
def link_session(user: str) -> Response:
    g.user = user
    return jsonify(LinkSessionSchema().dump(_user_links().session_status(user)))


@bp.post("/users/<user>/connect-email")
def connect_email(user: str) -> tuple[Response, int]:
    g.user = user
    sent = _user_links().send_connect_email(user, request.get_json(silent=True))
    expires = iso_time(sent.expires_at) if sent.expires_at else None
    return jsonify(EmailSentSchema().dump({"emailSent": sent.email_sent, "expiresAt": expires})), 202


# -- the directory of users ------------------------------------------------------------------------------------
def _users() -> UserAdmin:
    return current_app.extensions["users"]


@bp.get("/users")
def list_users() -> Response:
    records, next_cursor = _users().page(*_page_query())
    users = [user_json(record, with_key=False) for record in records]
    return jsonify(UserPageSchema().dump({"users": users, "nextCursor": next_cursor}))


@bp.get("/users/<user>")
def get_user(user: str) -> Response:
    g.user = validate_user(user)
    return jsonify(UserSchema().dump(user_json(_users().get(user))))


@bp.put("/users/<user>")
def put_user(user: str) -> tuple[Response, int]:
    g.user = validate_user(user)
    record, created = _users().attach(user, request.get_json(silent=True))
    return jsonify(UserSchema().dump(user_json(record))), 201 if created else 200


@bp.post("/users/<user>/profile")
def create_profile(user: str) -> tuple[Response, int]:
    g.user = validate_user(user)
    record, created = _users().create(user)
    return jsonify(UserSchema().dump(user_json(record))), 201 if created else 200


@bp.delete("/users/<user>")
def delete_user(user: str) -> tuple[str, int]:
    g.user = validate_user(user)
    _users().delete(user, delete_profile=_flag(request.args.get("deleteProfile"), "deleteProfile"))
    return "", 204


@bp.get("/users/<user>/accounts")
def accounts(user: str) -> Response:
    g.user = validate_user(user)
    return _accounts_json(current_app.extensions["accounts"].read(user))


@bp.delete("/users/<user>/accounts/<network>")
def unlink_account(user: str, network: str) -> Response:
    g.user = validate_user(user)
    if network not in SUPPORTED_NETWORKS:
        raise BadRequest(f"Unknown network; one of: {', '.join(sorted(SUPPORTED_NETWORKS))}.", code="bad_network")
    return _accounts_json(current_app.extensions["accounts"].unlink(user, network))


def _accounts_json(accounts) -> Response:
    checked_at = iso_time(accounts.checked_at)
    return jsonify(LinkedAccountsSchema().dump({"networks": list(accounts.networks), "checkedAt": checked_at}))


def _query(schema: Schema, problems: dict[str, tuple[str, str]]) -> dict:
    """The query string through its schema (an empty value counts as absent): a 400 with the parameter's own code."""
    try:
        return schema.load({name: value for name, value in request.args.items() if value != ""})
    except ValidationError as error:
        name = sorted(error.normalized_messages())[0]
        code, message = problems[name]
        raise BadRequest(message, code=code) from None


def _page_query() -> tuple[int, str | None]:
    """`limit` and `cursor` of the user list, checked (UserAdmin.page checks what a cursor decodes to)."""
    bad_cursor = ("bad_cursor", "'cursor' is not a cursor this API returned.")
    args = _query(
        UsersQuerySchema(),
        {"limit": ("bad_limit", f"'limit' must be a whole number from 1 to {MAX_PAGE}."), "cursor": bad_cursor},
    )
    return args.get("limit", DEFAULT_PAGE), args.get("cursor")


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "", "false", "0"):
        return False
    if value in ("true", "1"):
        return True
    raise BadRequest(f"'{name}' must be true or false.", code="bad_flag")


# -- webhooks passed on to the team's backend ------------------------------------------------------------------
@bp.get("/webhooks/deliveries")
def deliveries() -> Response:
    args = _query(
        DeliveriesQuerySchema(),
        {
            "state": ("bad_state", f"'state' must be one of {', '.join(DELIVERY_STATES)}."),
            "limit": ("bad_limit", f"'limit' must be a whole number from 1 to {MAX_DELIVERIES}."),
            "after": ("bad_after", "'after' must be the id of a delivery."),
        },
    )
    found = _outbox().list(args.get("state"), args.get("limit", DEFAULT_PAGE), args.get("after"))
    return jsonify(DeliveriesSchema().dump({"deliveries": [delivery.as_json() for delivery in found]}))


@bp.post("/webhooks/deliveries/<event_id>/retry")
def retry_delivery(event_id: str) -> tuple[Response, int]:
    delivery = _outbox().retry(event_id) if re.match(EVENT_ID, event_id) else None
    if delivery is None:
        raise NotFound("No delivery with this id.", code="unknown_delivery")
    worker = current_app.extensions.get("webhook_worker")
    if worker is not None:
        worker.wake()
    return jsonify(DeliverySchema().dump(delivery.as_json())), 202


def _outbox():
    outbox = current_app.extensions.get("webhook_outbox")
    if outbox is None:
        raise NotFound("WEBHOOK_FORWARD_URL is not set: nothing is passed on.", code="forwarding_disabled")
    return outbox
