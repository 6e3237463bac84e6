"""`UserLinks`: what the internal API does to one user's links: revoke them, read the current Link Session, and have
Ayrshare email the user a link to the linking page.

A revoke first tombstones the user's sessions and drops their cached links (so no revoked URL is served again, even
by a fetch that finishes meanwhile), then revokes each session at Ayrshare; a session whose revoke failed stays in
the user's index, and repeating the request retries it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from marshmallow import RAISE, Schema, ValidationError, fields, validate

from ..config import Settings
from ..errors import BadRequest, ServiceError, UnknownUser, UpstreamRefused, UpstreamUnavailable
from ..profiles import ProfileDirectory, validate_user
from ..upstream import AyrshareClient, CircuitBreaker, EmailSent, UpstreamNotFound
from ..urls import RedirectAllowlist
from .connect import credential_fingerprint
from .options import resolve_options
from .store import HandedOut, StoreUnavailable, user_scope

log = logging.getLogger(__name__)


class StoreDown(UpstreamUnavailable):
    code = "cache_unavailable"
    message = (
        "Redis is unreachable or refuses writes, so the user's links cannot be found or dropped. Try again shortly."
    )


class NoLinkSession(ServiceError):
    status = 404
    code = "no_link_session"
    message = "This user has no live Link Session."


class RevokeIncomplete(UpstreamUnavailable):
    code = "revoke_incomplete"


class ConnectEmailSchema(Schema):
    """`POST /internal/v1/users/<user>/connect-email`: the optional fields default to the CONNECT_EMAIL_* settings."""

    class Meta:
        unknown = RAISE

    to = fields.Email(required=True)
    contactEmail = fields.Email()  # noqa: N815 - Ayrshare's field names
    company = fields.String(validate=validate.Length(1, 200))
    termsUrl = fields.Url(schemes={"https"})  # noqa: N815
    privacyUrl = fields.Url(schemes={"https"})  # noqa: N815


EMAIL_DEFAULTS = {
    "contactEmail": ("connect_email_contact", "CONNECT_EMAIL_CONTACT_EMAIL"),
    "company": ("connect_email_company", "CONNECT_EMAIL_COMPANY"),
    "termsUrl": ("connect_email_terms_url", "CONNECT_EMAIL_TERMS_URL"),
    "privacyUrl": ("connect_email_privacy_url", "CONNECT_EMAIL_PRIVACY_URL"),
}


@dataclass(frozen=True)
class Revoked:
    """What a revoke did: sessions revoked at Ayrshare and cached links dropped."""

    sessions_revoked: int
    links_dropped: int


class UserLinks:
    """Revoke, status and email for one user at a time; built once by `create_app()`."""

    def __init__(
        self,
        settings: Settings,
        profiles: ProfileDirectory,
        client: AyrshareClient,
        store,
        breaker: CircuitBreaker | None = None,
        spend_email_budget: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.profiles = profiles
        self.client = client
        self.store = store
        self.breaker = breaker or CircuitBreaker()
        self.spend_email_budget = spend_email_budget or (lambda user: None)
        self.redirects = RedirectAllowlist.parse(settings.redirect_allowed_hosts)
        self._fingerprint = credential_fingerprint(settings)

    def revoke(self, user: str) -> Revoked:
        """Drop every cached link of the user and revoke their live sessions at Ayrshare."""
        scope = self._scope(user)
        try:
            links = self.store.handed_out(scope)
            self.store.drop(scope, links)
        except StoreUnavailable:
            raise StoreDown() from None
        done = [item for item in links if item.session_id is None]
        failed = 0
        for item in links:
            if item.session_id is None:
                continue
            try:
                self.breaker.call(lambda sid=item.session_id: self.client.revoke_link_session(sid))
            except UpstreamNotFound:
                pass  # Ayrshare no longer has it: nothing left to revoke
            except ServiceError as error:
                failed += 1
                log.warning("link session revoke failed", extra={"error_code": error.code})
                continue
            done.append(item)
        # If this fails they stay listed: a repeated revoke asks Ayrshare again, which is harmless (idempotent there).
        with contextlib.suppress(StoreUnavailable):
            self.store.forget(scope, done)
        if failed:
            raise RevokeIncomplete(
                f"{failed} of the user's Link Sessions could not be revoked at Ayrshare; their links are no longer "
                "served. Repeat this request to retry.",
                retry_after=5,
            )
        revoked = sum(1 for item in done if item.session_id)
        return Revoked(sessions_revoked=revoked, links_dropped=sum(1 for item in links if item.cache_key))

    def drop_cached(self, user: str) -> int:
        """Drop the user's cached links (not their sessions at Ayrshare), so the next click gets a fresh one."""
        scope = self._scope(user)
        try:
            links = self.store.handed_out(scope)
            self.store.drop(scope, links)
            self.store.forget(scope, [item for item in links if item.session_id is None])
        except StoreUnavailable:
            raise StoreDown() from None
        return sum(1 for item in links if item.cache_key)

    def session_status(self, user: str) -> dict:
        """The newest live session's state and use, read from Ayrshare."""
        scope = self._scope(user)
        if self.settings.link_flow != "session":
            raise NoLinkSession("AYRSHARE_LINK_FLOW=jwt: generateJWT links have no session to read.")
        try:
            sessions = [item for item in self.store.handed_out(scope) if item.session_id]
        except StoreUnavailable:
            raise StoreDown() from None
        if not sessions:
            raise NoLinkSession()
        try:
            return self.breaker.call(lambda: self.client.get_link_session(sessions[-1].session_id))
        except UpstreamNotFound:
            raise NoLinkSession() from None

    def send_connect_email(self, user: str, body: object) -> EmailSent:
        """Validate the request, fill in the defaults, and have Ayrshare send the email (one email per call)."""
        email = self._email_fields(body)
        profile_key = self._profile_key(user)
        scope = user_scope(self._fingerprint, self.settings.domain, profile_key)
        self.spend_email_budget(user)
        options = resolve_options({}, self.settings, self.redirects)
        sent = self.breaker.call(lambda: self.client.send_connect_email(profile_key, email, options))
        if not sent.email_sent:
            raise UpstreamRefused("Ayrshare did not send the Connect Accounts email.", code="email_not_sent")
        if sent.session_id:
            try:  # listed, so that revoking the user's links revokes this one too
                self.store.remember(scope, HandedOut(sent.session_id, None, sent.expires_at, time.time()))
            except StoreUnavailable:
                log.warning("emailed link session not indexed: redis unavailable")
        return sent

    def _email_fields(self, body: object) -> dict:
        if not isinstance(body, dict):
            raise BadRequest("The body must be a JSON object with at least 'to'.", code="bad_email_request")
        try:
            email = ConnectEmailSchema().load(body)
        except ValidationError as error:
            name = sorted(error.normalized_messages())[0]
            raise BadRequest(f"'{name}': {error.normalized_messages()[name][0]}", code="bad_email_request") from None
        for name, (attribute, setting) in EMAIL_DEFAULTS.items():
            email.setdefault(name, getattr(self.settings, attribute))
            if not email[name]:
                raise BadRequest(
                    f"'{name}' is required: Ayrshare sends the email only with every field (or set {setting}).",
                    code="bad_email_request",
                )
        return email

    def _profile_key(self, user: str) -> str:
        profile_key = self.profiles.lookup(validate_user(user))
        if profile_key is None:
            raise UnknownUser()
        return profile_key

    def _scope(self, user: str) -> str:
        return user_scope(self._fingerprint, self.settings.domain, self._profile_key(user))
