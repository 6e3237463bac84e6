"""Ayrshare-style error bodies for the generateJWT, Link Sessions and Profiles endpoints.

Shape (vendor docs): `{"action": "JWT", "status": "error", "code": <n>, "message": "..."}`, with action `linkSession`
on the Link Sessions endpoints (and the emulator's `profiles` / `user` on the Profiles endpoints and `GET /api/user`).
Codes 102, 188, 189, 333 and 434 come from the vendor's documentation. The docs give no code for the other failures,
so the emulator picks one and says so below; clients should branch on the HTTP status and treat the code as
informational.
"""

from __future__ import annotations

from flask import Response, jsonify

ACTION = "JWT"
# The action of the Link Sessions not-found body in the vendor's docs; the emulator uses it for all their errors.
ACTION_LINK_SESSION = "linkSession"
# Emulator's choice (undocumented): the docs show no error body for the Profiles endpoints or `GET /api/user`.
ACTION_PROFILES = "profiles"
ACTION_USER = "user"

# Documented by the vendor.
CODE_INVALID_API_KEY = 102  # HTTP 403
CODE_PARTIAL_TWITTER_KEYS = 188  # HTTP 400
CODE_JWT_GENERATION = 189  # HTTP 400, private key could not be used
CODE_DUPLICATE_TWITTER_CREDENTIALS = 434  # HTTP 400
CODE_EMAIL_NOT_SENT = 333  # HTTP 400, a field the Connect Accounts email needs is missing (social-linking overview)

# Emulator's choice (undocumented): 101 is Ayrshare's generic "missing or incorrect parameters" code in
# its other endpoints, so every body-validation failure without a documented code uses it.
CODE_BAD_PARAMETERS = 101
# Emulator's choice (undocumented): the vendor documents HTTP 429 but no body code; reuse the status.
CODE_RATE_LIMITED = 429
# Emulator's choice (undocumented): the vendor documents HTTP 404 and the message for an unknown Link Session, not a
# code; as for the rate limit, the body repeats the status. Another API key's session gets the same answer.
CODE_LINK_SESSION_NOT_FOUND = 404

MESSAGE_INVALID_API_KEY = (
    "API Key not valid. Verify the API Key in the Authorization header is the API Key of the Primary "
    "Profile: Authorization: Bearer API_KEY"
)
MESSAGE_PRIVATE_KEY_UNPARSEABLE = (
    "Error generating JWT. Check the sent parameters, such as the privateKey has no extra tabs, spaces, "
    "or newlines. Error: error:0909006C:PEM routines:get_name:no start line"
)
MESSAGE_PARTIAL_TWITTER_KEYS = "Both twitterApiKey and twitterApiSecret are required. You provided only one."
MESSAGE_DUPLICATE_TWITTER_CREDENTIALS = (
    "X/Twitter API credentials were provided in both the request headers and the request body. Please use "
    "the headers only. See https://www.ayrshare.com/docs/apis/profiles/generate-jwt"
)
MESSAGE_LINK_SESSION_NOT_FOUND = "Link session not found."
# The vendor's wording for a create whose title is taken, as public integrations match it ("Profile title already
# exists", HTTP 400); its code is undocumented, so it gets CODE_BAD_PARAMETERS like other body problems.
MESSAGE_DUPLICATE_TITLE = "Profile title already exists."
# Emulator's wording (undocumented) for a Profile-Key that names no live profile; generateJWT and Link Sessions use
# the same 400 / code 101 answer.
MESSAGE_PROFILE_KEY_NOT_FOUND = "Profile Key not found. Verify the Profile-Key header of the User Profile."
MESSAGE_RATE_LIMITED = (
    "Rate limit exceeded for this User Profile. Wait for the current 5-minute window to end before retrying."
)


class ApiError(Exception):
    """Raised while validating a request; the view turns it into the vendor's error body."""

    def __init__(self, http_status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


def bad_parameters(message: str) -> ApiError:
    """A 400 for a body problem the vendor documents no specific code for."""
    return ApiError(400, CODE_BAD_PARAMETERS, message)


def error_response(error: ApiError, action: str = ACTION) -> Response:
    """Render an ApiError as the vendor's JSON error body with its HTTP status."""
    response = jsonify({"action": action, "status": "error", "code": error.code, "message": error.message})
    response.status_code = error.http_status
    return response
