"""`UserAdmin`: what the internal API and the `flask profiles` commands do to the directory, as plain methods.

Every input is validated before anything is written; an attached key is checked with Ayrshare first. Revoking a user's
links is handed in as a function (it lives with the links), so this package does not depend on them.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import re
from collections.abc import Callable

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ..errors import BadRequest, ServiceError, UnknownUser
from ..timefmt import iso_time
from ..upstream import AyrshareClient, ProfileKeyRefused, UpstreamNotFound
from .directory import ClaimHeld, Directory, UserRecord
from .ids import validate_user
from .lookup import ProfileLookup
from .provisioning import Provisioner

PROFILE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{5,127}\Z")  # \Z: marshmallow's Regexp only anchors the start
DEFAULT_PAGE = 100
MAX_PAGE = 500
PRINTABLE = validate.Regexp(r"[^\x00-\x1f\x7f]*\Z", error="must not contain control characters")


class AttachSchema(Schema):
    """`PUT /internal/v1/users/<user>`: attach an existing Ayrshare profile."""

    class Meta:
        unknown = RAISE

    profileKey = fields.String(  # noqa: N815 - Ayrshare's field names
        required=True,
        validate=validate.Regexp(PROFILE_KEY, error="must be an Ayrshare profile key (letters, digits, - and _)"),
    )
    refId = fields.String(validate=[validate.Length(1, 128), PRINTABLE])  # noqa: N815
    title = fields.String(validate=[validate.Length(1, 255), PRINTABLE])


class KeyRefused(ServiceError):
    status = 422
    code = "profile_key_refused"
    message = "Ayrshare does not accept this profile key for this account."


class ManagedByFile(ServiceError):
    status = 409
    code = "user_in_profile_keys_file"
    message = "This user is listed in PROFILE_KEYS_FILE, which wins over the directory: change the file instead."


class CreationPending(ServiceError):
    status = 409
    code = "profile_creation_pending"
    message = "This user's profile is being created (or its creation needs an operator: flask profiles pending)."


def user_json(record: UserRecord, with_key: bool = True) -> dict:
    """The internal API's view of a user (the profile key only for the team's backend, never in a log)."""
    body = {
        "user": record.user,
        "state": record.state,
        "refId": record.ref_id,
        "title": record.title,
        "source": record.source,
        "createdAt": iso_time(record.created_at),
        "updatedAt": iso_time(record.updated_at),
        "linkedNetworks": list(record.linked_networks) if record.linked_networks is not None else None,
        "linkedNetworksCheckedAt": iso_time(record.linked_networks_checked_at),
    }
    if with_key:
        body = {"user": record.user, "profileKey": record.profile_key, **body}
    return body


class UserAdmin:
    """Get, attach, create, delete and list users; `revoke_links(user)` drops and revokes their links."""

    def __init__(
        self,
        directory: Directory,
        lookup: ProfileLookup,
        provisioner: Provisioner,
        client: AyrshareClient,
        revoke_links: Callable[[str], object],
        breaker=None,
    ):
        self.directory, self.lookup, self.provisioner, self.client = directory, lookup, provisioner, client
        self.revoke_links, self.breaker = revoke_links, breaker

    def get(self, user: str) -> UserRecord:
        record = self.directory.get(user)
        if record is None:
            raise UnknownUser("No user with this id in the directory.")
        return record

    def attach(self, user: str, body: object, source: str = "api", check: bool = True) -> tuple[UserRecord, bool]:
        """Attach an existing profile (idempotent): (the row, created). The key is checked with Ayrshare first."""
        fields_ = load(AttachSchema(), body, "bad_profile")
        if source != "file" and self.lookup.from_file(user):
            raise ManagedByFile()
        if check:
            try:
                self._guarded(lambda: self.client.linked_accounts(fields_["profileKey"]))
            except ProfileKeyRefused:
                raise KeyRefused() from None
        previous = self.directory.get(user)
        if previous is not None and previous.state == "pending" and previous.in_flight():
            raise CreationPending()
        if previous is not None and previous.state == "active" and previous.profile_key != fields_["profileKey"]:
            self.revoke_links(user)  # links of the old profile must not outlive the change
        try:
            created = self.directory.put(
                user, fields_["profileKey"], source, fields_.get("refId"), fields_.get("title")
            )
        except ClaimHeld:
            raise CreationPending() from None
        self.lookup.changed(user)
        return self.directory.get(user), created or (previous is not None and previous.state == "pending")

    def import_user(self, user: str, profile_key: str, check: bool = False) -> tuple[UserRecord, bool]:
        """One entry of `flask profiles import`: attach with source "file"."""
        return self.attach(user, {"profileKey": profile_key}, source="file", check=check)

    def create(self, user: str) -> tuple[UserRecord, bool]:
        """Create the user's Ayrshare profile now (never a second one): (the row, created now)."""
        if self.lookup.from_file(validate_user(user)):
            raise ManagedByFile()
        _, created = self.provisioner.ensure(user, source="api")
        return self.directory.get(user), created

    def delete(self, user: str, delete_profile: bool = False) -> None:
        """Forget the user, revoke and drop their links, and with `delete_profile` delete the Ayrshare profile too."""
        if self.lookup.from_file(user):
            raise ManagedByFile()
        record = self.get(user)
        if record.state != "active":
            raise CreationPending()
        self.revoke_links(user)
        if delete_profile:
            with contextlib.suppress(UpstreamNotFound):  # already gone at Ayrshare
                self._guarded(lambda: self.client.delete_profile(record.profile_key))
        self.directory.delete(user)
        self.lookup.changed(user)

    def page(self, size: int, cursor: str | None) -> tuple[list[UserRecord], str | None]:
        """A page of at most `size` users and the cursor of the next one (None at the end)."""
        after = _decode_cursor(cursor) if cursor else None
        records = self.directory.page(size + 1, after)
        more = len(records) > size
        records = records[:size]
        return records, _encode_cursor(records[-1].user) if more else None

    def _guarded(self, call):
        return self.breaker.call(call) if self.breaker else call()


def load(schema: Schema, body: object, code: str) -> dict:
    """Validate a JSON body: a 400 that names the first bad field and says what to fix."""
    if not isinstance(body, dict):
        raise BadRequest("The body must be a JSON object.", code=code)
    try:
        return schema.load(body)
    except ValidationError as error:
        messages = error.normalized_messages()
        name = sorted(messages)[0]
        problem = messages[name][0] if isinstance(messages[name], list) else "is not valid"
        if problem == "Unknown field.":
            problem = "is not a known field"
        raise BadRequest(f"'{name}': {problem}", code=code) from None


def _encode_cursor(user: str) -> str:
    return base64.urlsafe_b64encode(user.encode()).decode().rstrip("=")


def _decode_cursor(cursor: object) -> str:
    text = str(cursor)
    try:
        if not re.fullmatch(r"[A-Za-z0-9_-]+", text):
            raise ValueError(text)
        return validate_user(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode())
    except (binascii.Error, UnicodeDecodeError, ValueError, BadRequest):
        raise BadRequest("'cursor' is not a cursor this API returned.", code="bad_cursor") from None
