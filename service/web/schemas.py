"""The shapes of the service's answers and query strings, as marshmallow schemas.

The handlers dump every JSON answer through these (so an answer holds exactly the fields declared here), and
service/web/openapi.py describes the API from them and from the request schemas the code validates with
(`AttachSchema`, `ConnectEmailSchema`): the published description and the answers cannot drift apart.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from ..profiles.admin import DEFAULT_PAGE, MAX_PAGE
from ..upstream.ayrshare import SESSION_STATES

DELIVERY_STATES = ("pending", "delivered", "failed")
EVENT_ID = r"[A-Za-z0-9_-]{1,128}\Z"  # evt_ and hex; nothing PostgreSQL would refuse (it refuses NUL in text)
MAX_DELIVERIES = 500


def _time(**kwargs) -> fields.String:
    """An ISO 8601 UTC time such as `2026-09-02T08:03:26Z` (the answers format their times themselves)."""
    return fields.String(metadata={"format": "date-time", **kwargs.pop("metadata", {})}, **kwargs)


# -- errors ------------------------------------------------------------------------------------------------------
class ErrorSchema(Schema):
    """The project's own error member, `{"code", "message"}` (kept inside every problem for older clients)."""

    code = fields.String(required=True, metadata={"description": "Stable, machine-readable error code."})
    message = fields.String(required=True, metadata={"description": "What happened and what to fix."})


class ProblemSchema(Schema):
    """An RFC 9457 problem details object (`application/problem+json`)."""

    type = fields.String(
        required=True,
        metadata={"format": "uri", "description": "A stable identifier per error code (need not resolve)."},
    )
    title = fields.String(required=True, metadata={"description": "The error code in words (the same per type)."})
    status = fields.Integer(required=True, metadata={"description": "The HTTP status of this answer."})
    detail = fields.String(required=True, metadata={"description": "What happened and what to fix."})
    code = fields.String(required=True, metadata={"description": "Extension: the project's stable error code."})
    requestId = fields.String(  # noqa: N815 - the JSON names are camelCase
        required=True, metadata={"description": "Extension: this request's id, as in X-Request-ID and the logs."}
    )
    error = fields.Nested(
        ErrorSchema,
        required=True,
        metadata={"description": "Extension: the same code and message in the service's older error shape."},
    )


# -- /connect ----------------------------------------------------------------------------------------------------
class ConnectQuerySchema(Schema):
    """The options a `/connect` link may carry (`expires` and `signature` are the signed-link security scheme)."""

    redirect = fields.String(
        metadata={"description": "An https URL on a host in REDIRECT_ALLOWED_HOSTS, where Ayrshare sends the user."}
    )
    allowedSocial = fields.String(  # noqa: N815
        metadata={"description": "Comma-separated networks to offer, narrowed to AYRSHARE_ALLOWED_SOCIAL."}
    )


class LinkSchema(Schema):
    """A linking URL as JSON (for callers whose Accept prefers JSON)."""

    url = fields.String(required=True, metadata={"format": "uri", "description": "Ayrshare's linking page."})
    expiresAt = _time(required=True)  # noqa: N815
    cached = fields.Boolean(required=True, metadata={"description": "Whether the link was served from the cache."})


class NetworksSchema(Schema):
    networks = fields.List(fields.String(), required=True, metadata={"description": "The linked networks' names."})


class LinkedAccountsSchema(NetworksSchema):
    checkedAt = _time(required=True, metadata={"description": "When Ayrshare was last asked."})  # noqa: N815


# -- /internal/v1: the directory of users ----------------------------------------------------------------------
class ListedUserSchema(Schema):
    user = fields.String(required=True)
    state = fields.String(required=True, validate=validate.OneOf(["active", "pending"]))
    refId = fields.String(required=True, allow_none=True)  # noqa: N815
    title = fields.String(required=True, allow_none=True)
    source = fields.String(required=True)
    createdAt = _time(required=True, allow_none=True)  # noqa: N815
    updatedAt = _time(required=True, allow_none=True)  # noqa: N815
    linkedNetworks = fields.List(fields.String(), required=True, allow_none=True)  # noqa: N815
    linkedNetworksCheckedAt = _time(required=True, allow_none=True)  # noqa: N815


class UserSchema(ListedUserSchema):
    profileKey = fields.String(required=True, allow_none=True)  # noqa: N815


class UserPageSchema(Schema):
    users = fields.List(fields.Nested(ListedUserSchema), required=True)
    nextCursor = fields.String(  # noqa: N815
        required=True, allow_none=True, metadata={"description": "Pass as `cursor` for the next page; null at the end."}
    )


class UsersQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE  # other query parameters are ignored

    limit = fields.Integer(validate=validate.Range(1, MAX_PAGE), metadata={"default": DEFAULT_PAGE})
    cursor = fields.String(
        validate=validate.Regexp(r"[A-Za-z0-9_-]+\Z"),
        metadata={"description": "The `nextCursor` of the previous page."},
    )


class DeleteUserQuerySchema(Schema):
    deleteProfile = fields.String(  # noqa: N815
        validate=validate.OneOf(["true", "false", "1", "0"]),
        metadata={"description": "Also delete the user's Ayrshare profile."},
    )


# -- /internal/v1: each user's links -----------------------------------------------------------------------------
class RevokedSchema(Schema):
    user = fields.String(required=True)
    sessionsRevoked = fields.Integer(required=True)  # noqa: N815
    linksDropped = fields.Integer(required=True)  # noqa: N815


class LinkSessionSchema(Schema):
    """The newest live Link Session as Ayrshare reports it."""

    state = fields.String(required=True, validate=validate.OneOf(sorted(SESSION_STATES)))
    createdAt = _time()  # noqa: N815
    expiresAt = _time()  # noqa: N815
    useCount = fields.Integer()  # noqa: N815
    firstUsedAt = _time()  # noqa: N815
    lastUsedAt = _time()  # noqa: N815


class EmailSentSchema(Schema):
    emailSent = fields.Boolean(required=True)  # noqa: N815
    expiresAt = _time(required=True, allow_none=True)  # noqa: N815


# -- webhooks ----------------------------------------------------------------------------------------------------
class DeliverySchema(Schema):
    """An event passed on to WEBHOOK_FORWARD_URL, and how its delivery stands."""

    id = fields.String(required=True)
    type = fields.String(required=True)
    user = fields.String(required=True, allow_none=True)
    network = fields.String(required=True, allow_none=True)
    occurredAt = _time(required=True)  # noqa: N815
    state = fields.String(required=True, validate=validate.OneOf(DELIVERY_STATES))
    attempts = fields.Integer(required=True)
    nextAttemptAt = _time(required=True, allow_none=True)  # noqa: N815
    lastError = fields.String(required=True, allow_none=True)  # noqa: N815
    deliveredAt = _time(required=True, allow_none=True)  # noqa: N815


class DeliveriesSchema(Schema):
    deliveries = fields.List(fields.Nested(DeliverySchema), required=True)


class DeliveriesQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    state = fields.String(validate=validate.OneOf(DELIVERY_STATES))
    limit = fields.Integer(validate=validate.Range(1, MAX_DELIVERIES), metadata={"default": DEFAULT_PAGE})
    after = fields.String(
        validate=validate.Regexp(EVENT_ID),
        metadata={"description": "The id of the last delivery of the previous page."},
    )


class WebhookReceiptSchema(Schema):
    status = fields.String(
        required=True, validate=validate.OneOf(["accepted", "duplicate", "unknown_ref_id", "ignored"])
    )
    id = fields.String(required=True, allow_none=True, metadata={"description": "The recorded event's id."})


# -- health ------------------------------------------------------------------------------------------------------
class HealthSchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ok"]))


class ReadyChecksSchema(Schema):
    config = fields.String(required=True, validate=validate.OneOf(["ok"]))
    cache = fields.String(required=True, validate=validate.OneOf(["ok", "failing"]))
    database = fields.String(required=True, validate=validate.OneOf(["ok", "failing", "not_migrated"]))


class ReadySchema(Schema):
    status = fields.String(required=True, validate=validate.OneOf(["ready", "not_ready"]))
    cache_backend = fields.String(required=True)
    checks = fields.Nested(ReadyChecksSchema, required=True)
    error = fields.Nested(ErrorSchema, metadata={"description": "The failing check, when not ready."})
