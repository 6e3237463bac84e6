"""The shape of a user id: what `/connect/<user>`, the internal API and the CLI accept."""

from __future__ import annotations

import re

from ..errors import BadRequest

# Conservative on purpose: ids appear in signed strings ("<user>:<expires>"), cache keys and logs.
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def validate_user(user: str) -> str:
    if not USER_ID.fullmatch(user):
        raise BadRequest(
            "The user id must be 1-128 characters: letters, digits and . _ @ + - (starting with a letter or digit).",
            code="bad_user_id",
        )
    return user
