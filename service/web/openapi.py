"""The OpenAPI 3.1 description of the service, built with apispec from the marshmallow schemas the handlers validate
with and dump their answers through (service/web/schemas.py, `AttachSchema`, `ConnectEmailSchema`).

Served at `GET /openapi.json` and committed as docs/openapi.json; `make openapi` (`python -m service.web.openapi`,
which needs no configuration) or `flask --app service openapi` rewrites the file, and a test checks that the two are
the same.
"""

from __future__ import annotations

import json
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click
from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, Flask, Response

from ..config.schema import SUPPORTED_NETWORKS
from ..links.user_links import ConnectEmailSchema
from ..profiles import USER_ID
from ..profiles.admin import AttachSchema
from . import schemas
from .errors import PROBLEM_JSON, PROBLEM_TYPE_BASE

bp = Blueprint("openapi", __name__)

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"

DESCRIPTION = f"""\
Sends each of a team's users to Ayrshare's social-account linking page without exposing the team's keys.

`/connect/{{user}}` is opened by the modes in `CONNECT_AUTH`: a signed link (`expires` and `signature` in the \
query), a session JWT (bearer, or the `JWT_COOKIE` cookie), a trusted proxy's user header, or no check at all \
(`none`). Everything under `/internal/v1/` opens only with the bearer `INTERNAL_API_TOKEN`.

Errors are RFC 9457 problem details (`{PROBLEM_JSON}`): `type` is `{PROBLEM_TYPE_BASE}<code>`, an \
identifier that need not resolve, and `title` the code in words; `code` and `requestId` are extension members, and \
so is `error: {{code, message}}`, kept for clients written against the older shape. On `/connect`, browsers that \
ask for HTML get a small error page instead. `429` and `503` answers carry `Retry-After`.
"""

SECURITY_SCHEMES = {
    "internalToken": {
        "type": "http",
        "scheme": "bearer",
        "description": "INTERNAL_API_TOKEN, for the team's backend: the internal API, and any user's /connect link.",
    },
    "sessionJwt": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "A session JWT of the team's app (CONNECT_AUTH=jwt), naming the user in its subject claim.",
    },
    "signedLinkExpires": {
        "type": "apiKey",
        "in": "query",
        "name": "expires",
        "description": "Signed link (CONNECT_AUTH=signed): Unix time the link stops working; used with `signature`.",
    },
    "signedLinkSignature": {
        "type": "apiKey",
        "in": "query",
        "name": "signature",
        "description": "Signed link: HMAC of the user, `expires` and any signed options (see `flask sign-url`).",
    },
}
CONNECT_SECURITY = [
    {"signedLinkExpires": [], "signedLinkSignature": []},
    {"sessionJwt": []},
    {"internalToken": []},
]
INTERNAL_SECURITY = [{"internalToken": []}]

ERROR_MEANINGS = {
    400: "The request is wrong: the problem's detail names what to fix.",
    401: "No credential, or one that does not verify.",
    403: "A credential that may not do this (or the feature is off).",
    404: "No such user, item or page.",
    409: "The user is managed elsewhere, or their profile is being created.",
    422: "Ayrshare does not accept this profile key.",
    429: "Too many requests (with Retry-After).",
    500: "A bug; logged with its type, never with secrets.",
    502: "Ayrshare refused the request or answered with something unusable.",
    503: "Ayrshare, Redis or the database is unavailable (with Retry-After).",
    504: "Ayrshare did not answer in time.",
}
RETRY_AFTER = {"description": "Seconds to wait before trying again.", "schema": {"type": "integer", "minimum": 1}}


def _errors(*statuses: int, html: bool = False) -> dict:
    """Problem-details answers for these statuses (and the HTML page, where browsers may ask for it)."""
    content = {PROBLEM_JSON: {"schema": schemas.ProblemSchema}}
    if html:
        content["text/html"] = {"schema": {"type": "string"}}
    answers = {}
    for status in statuses:
        answers[str(status)] = {"description": ERROR_MEANINGS[status], "content": content}
        if status in (429, 503):
            answers[str(status)]["headers"] = {"Retry-After": RETRY_AFTER}
    return answers


def _json(schema, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, description: str, pattern: str | None = None, enum: list | None = None) -> dict:
    schema = {"type": "string"} | ({"pattern": f"^{pattern}$"} if pattern else {}) | ({"enum": enum} if enum else {})
    return {"in": "path", "name": name, "required": True, "description": description, "schema": schema}


USER = _path_param("user", "The team's id for the user.", USER_ID.pattern)


# Links say how a client walks the directory (and what schemathesis's stateful test follows): from a user it created
# or listed to that user, their links, their deletion, and the 404 after it.
def _link(operation_id: str, user: str, description: str) -> dict:
    """An OpenAPI link: call `operation_id` next, for the user that `user` (a runtime expression) names."""
    return {"operationId": operation_id, "parameters": {"path.user": user}, "description": description}


CONNECT_ERRORS = (400, 401, 403, 404, 429, 500, 502, 503, 504)
INTERNAL_ERRORS = (400, 401, 403, 404, 500, 502, 503, 504)


def _paths() -> dict:
    """Every route, as apispec operations (schemas as classes: the marshmallow plugin turns them into components)."""
    link_headers = {"Cache-Control": {"schema": {"type": "string", "const": "no-store"}}}
    return {
        "/connect/{user}": {
            "get": {
                "operationId": "connect",
                "summary": "Send the user to Ayrshare's linking page",
                "description": "A 302 to the linking URL, or, when the caller's Accept prefers JSON, the URL as JSON.",
                "tags": ["connect"],
                "security": CONNECT_SECURITY,
                "parameters": [USER, {"in": "query", "schema": schemas.ConnectQuerySchema}],
                "responses": {
                    "200": {
                        **_json(schemas.LinkSchema, "The linking URL (Accept prefers JSON)."),
                        "headers": link_headers,
                    },
                    "302": {
                        "description": "Redirect to the linking URL (any other Accept); no body.",
                        "headers": {"Location": {"schema": {"type": "string", "format": "uri"}}, **link_headers},
                    },
                    **_errors(*CONNECT_ERRORS, html=True),
                },
            }
        },
        "/connect/{user}/accounts": {
            "get": {
                "operationId": "connectedAccounts",
                "summary": "The networks the user has linked (names only)",
                "tags": ["connect"],
                "security": CONNECT_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": _json(schemas.NetworksSchema, "The linked networks."),
                    **_errors(*CONNECT_ERRORS, html=True),
                },
            }
        },
        "/internal/v1/users": {
            "get": {
                "operationId": "listUsers",
                "summary": "A page of the directory's users (without their profile keys)",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [{"in": "query", "schema": schemas.UsersQuerySchema}],
                "responses": {
                    "200": {
                        **_json(schemas.UserPageSchema, "A page of users."),
                        "links": {
                            "getFirstUser": _link("getUser", "$response.body#/users/0/user", "The page's first user.")
                        },
                    },
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/users/{user}": {
            "get": {
                "operationId": "getUser",
                "summary": "One user of the directory, with their profile key",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": {
                        **_json(schemas.UserSchema, "The user."),
                        "links": {
                            "revokeLinks": _link("revokeLinks", "$response.body#/user", "Revoke the user's links.")
                        },
                    },
                    **_errors(*INTERNAL_ERRORS),
                },
            },
            "put": {
                "operationId": "attachUser",
                "summary": "Attach an existing Ayrshare profile to the user (idempotent; the key is checked first)",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": AttachSchema}}},
                "responses": {
                    "200": _json(schemas.UserSchema, "The user, changed."),
                    "201": _json(schemas.UserSchema, "The user, added."),
                    **_errors(*INTERNAL_ERRORS, 409, 422),
                },
            },
            "delete": {
                "operationId": "deleteUser",
                "summary": "Forget the user and revoke their links (and with deleteProfile, delete the profile)",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER, {"in": "query", "schema": schemas.DeleteUserQuerySchema}],
                "responses": {
                    "204": {
                        "description": "Deleted.",
                        # No body: the deleted user is the one the request named, and reading them is now a 404.
                        "links": {"getDeletedUser": _link("getUser", "$request.path.user", "Now a 404 unknown_user.")},
                    },
                    **_errors(*INTERNAL_ERRORS, 409),
                },
            },
        },
        "/internal/v1/users/{user}/profile": {
            "post": {
                "operationId": "createProfile",
                "summary": "Create the user's Ayrshare profile now (never a second one)",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": _json(schemas.UserSchema, "The user already had a profile."),
                    "201": {
                        **_json(schemas.UserSchema, "The profile was created."),
                        "links": {"getCreatedUser": _link("getUser", "$response.body#/user", "The user just created.")},
                    },
                    **_errors(*INTERNAL_ERRORS, 409, 429),
                },
            }
        },
        "/internal/v1/users/{user}/accounts": {
            "get": {
                "operationId": "linkedAccounts",
                "summary": "The networks the user has linked",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": _json(schemas.LinkedAccountsSchema, "The linked networks."),
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/users/{user}/accounts/{network}": {
            "delete": {
                "operationId": "unlinkAccount",
                "summary": "Unlink one network from the user's profile",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [
                    USER,
                    _path_param("network", "A network Ayrshare supports.", enum=sorted(SUPPORTED_NETWORKS)),
                ],
                "responses": {
                    "200": _json(schemas.LinkedAccountsSchema, "The networks still linked."),
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/users/{user}/links": {
            "delete": {
                "operationId": "revokeLinks",
                "summary": "Drop the user's cached links and revoke their Link Sessions at Ayrshare",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": {
                        **_json(schemas.RevokedSchema, "What was revoked."),
                        "links": {"deleteUser": _link("deleteUser", "$response.body#/user", "Then forget the user.")},
                    },
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/users/{user}/link-session": {
            "get": {
                "operationId": "linkSession",
                "summary": "The user's newest live Link Session, as Ayrshare reports it",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "responses": {
                    "200": _json(schemas.LinkSessionSchema, "The session's state and use."),
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/users/{user}/connect-email": {
            "post": {
                "operationId": "connectEmail",
                "summary": "Have Ayrshare email the user a link to the linking page",
                "tags": ["internal"],
                "security": INTERNAL_SECURITY,
                "parameters": [USER],
                "requestBody": {"required": True, "content": {"application/json": {"schema": ConnectEmailSchema}}},
                "responses": {
                    "202": _json(schemas.EmailSentSchema, "Ayrshare sends the email."),
                    **_errors(*INTERNAL_ERRORS, 429),
                },
            }
        },
        "/internal/v1/webhooks/deliveries": {
            "get": {
                "operationId": "listDeliveries",
                "summary": "Events passed on to WEBHOOK_FORWARD_URL, by id",
                "tags": ["internal", "webhooks"],
                "security": INTERNAL_SECURITY,
                "parameters": [{"in": "query", "schema": schemas.DeliveriesQuerySchema}],
                "responses": {
                    "200": _json(schemas.DeliveriesSchema, "A page of deliveries."),
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/internal/v1/webhooks/deliveries/{event_id}/retry": {
            "post": {
                "operationId": "retryDelivery",
                "summary": "Send an event again now",
                "tags": ["internal", "webhooks"],
                "security": INTERNAL_SECURITY,
                "parameters": [_path_param("event_id", "A delivery's id, such as evt_….")],
                "responses": {
                    "202": _json(schemas.DeliverySchema, "The delivery, due now."),
                    **_errors(*INTERNAL_ERRORS),
                },
            }
        },
        "/webhooks/ayrshare": {
            "post": {
                "operationId": "ayrshareWebhook",
                "summary": "Ayrshare's signed webhook deliveries (Standard Webhooks signatures)",
                "tags": ["webhooks"],
                "security": [],
                "parameters": [
                    {"in": "header", "name": name, "required": True, "schema": {"type": "string"}}
                    for name in ("webhook-id", "webhook-timestamp", "webhook-signature")
                ],
                "requestBody": {
                    "required": True,
                    "description": "Ayrshare's event, verified on the raw bytes (at most 64 KiB).",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {
                    "200": _json(schemas.WebhookReceiptSchema, "Verified; recorded once (or ignored)."),
                    **_errors(400, 401, 404, 500, 503),
                },
            }
        },
        "/healthz": {
            "get": {
                "operationId": "healthz",
                "summary": "Liveness: the process serves",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json(schemas.HealthSchema, "Serving.")},
            }
        },
        "/readyz": {
            "get": {
                "operationId": "readyz",
                "summary": "Readiness: configuration loaded, Redis and the database reachable, the database migrated",
                "tags": ["health"],
                "security": [],
                "responses": {
                    "200": _json(schemas.ReadySchema, "Ready."),
                    "503": _json(schemas.ReadySchema, "Not ready: `error` names the failing check."),
                },
            }
        },
        "/openapi.json": {
            "get": {
                "operationId": "openapi",
                "summary": "This description",
                "tags": ["health"],
                "security": [],
                "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document.")},
            }
        },
    }


def _project_version() -> str:
    try:
        return version("ayrshare-connect")
    except PackageNotFoundError:  # pragma: no cover - run from a tree that is not installed
        return "0.0.0"


def _anchored_patterns(self, field, ret: dict, **kwargs) -> dict:
    """marshmallow's Regexp matches from the start (`re.match`) and the code's patterns end with Python's `\\Z`; a
    JSON Schema pattern is an unanchored ECMA-262 search, so say both ends the portable way."""
    pattern = ret.get("pattern")
    if isinstance(pattern, str):
        if pattern.endswith("\\Z"):
            pattern = pattern[:-2] + "$"
        ret["pattern"] = pattern if pattern.startswith("^") else "^" + pattern
    return {}


@cache
def build_spec() -> dict:
    """The OpenAPI document as a dict (the same for every configuration, so built once per process)."""
    marshmallow = MarshmallowPlugin()
    spec = APISpec(
        title="ayrshare-connect",
        version=_project_version(),
        openapi_version="3.1.0",
        plugins=[marshmallow],
        info={"description": DESCRIPTION},
    )
    marshmallow.converter.add_attribute_function(_anchored_patterns)
    for name, scheme in SECURITY_SCHEMES.items():
        spec.components.security_scheme(name, scheme)
    for path, operations in _paths().items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def spec_json() -> str:
    """The document as docs/openapi.json holds it."""
    return json.dumps(build_spec(), indent=2, ensure_ascii=False) + "\n"


@bp.get("/openapi.json")
def openapi() -> Response:
    return Response(spec_json(), mimetype="application/json")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)

    @app.cli.command("openapi")
    @click.option("--output", type=click.Path(dir_okay=False, path_type=Path), default=COMMITTED, show_default=True)
    def write_openapi(output: Path) -> None:
        """Write the OpenAPI description (docs/openapi.json) from the code."""
        write(output)


def write(output: Path = COMMITTED) -> None:
    output.write_text(spec_json())
    click.echo(f"wrote {output}", err=True)


if __name__ == "__main__":
    write()
