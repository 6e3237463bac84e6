"""`AyrshareClient`: every call the service makes to Ayrshare, and the checks that make an answer usable.

A linking URL comes from the configured flow, a Link Session (the default) or generateJWT. Either way a `Link` is only
made from a URL on an allowed linking host whose expiry is in the future and within what was asked for; anything else
is an upstream fault (502).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import parse_qs, quote, urlsplit

import jwt
import requests

from ..config import Settings
from ..errors import BadRequest
from ..urls import web_origin
from .models import UNLINKABLE_NETWORKS, CreatedProfile, Link, LinkedAccounts, LinkOptions
from .transport import (
    AyrshareRefusal,
    AyrshareTransport,
    DuplicateTitle,
    MalformedAnswer,
    ProfileKeyRefused,
    UpstreamNotFound,
)

log = logging.getLogger(__name__)

EXPIRY_SKEW_SECONDS = 60  # how much later than asked for a link may claim to expire (clock differences)
SESSION_FIELDS = ("state", "createdAt", "expiresAt", "useCount", "firstUsedAt", "lastUsedAt")
SESSION_STATES = frozenset({"pending", "active", "expired", "revoked"})


@dataclass(frozen=True)
class AllowedLinkHosts:
    """`LINK_ALLOWED_HOSTS`: a bare host means https only; `http://host:port` allows exactly that origin."""

    origins: frozenset[str]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> AllowedLinkHosts:
        origins = (web_origin(entry if "://" in entry else f"https://{entry}") for entry in entries)
        return cls(frozenset(origin for origin in origins if origin))

    def allows(self, url: str) -> bool:
        # web_origin refuses credentials, backslashes and other shapes a browser might read differently.
        return web_origin(url) in self.origins


@dataclass(frozen=True)
class EmailSent:
    """What Ayrshare answered to a Connect Accounts email request."""

    email_sent: bool
    expires_at: float | None
    session_id: str | None = None


class AyrshareClient:
    """Gets linking URLs in the configured flow, reads and revokes Link Sessions, and sends Connect Accounts emails."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.flow = settings.link_flow
        self.domain = settings.domain
        self.link_hosts = AllowedLinkHosts.parse(settings.link_allowed_hosts)
        self.transport = AyrshareTransport(settings, session)
        self.public_key = settings.signing_key.public_key if settings.signing_key else None
        self._private_key_pem = settings.signing_key.pem if settings.signing_key else None

    def servable(self, url: str) -> bool:
        """The check every URL passes before it is served, fresh or cached: on an allowed linking host (https unless
        an http emulator origin is listed; `web_origin` refuses control characters and spaces anywhere in the URL),
        and in the jwt flow exactly one `jwt`."""
        if not self.link_hosts.allows(url):
            return False
        return self.flow != "jwt" or len(parse_qs(urlsplit(url).query).get("jwt", [])) == 1

    def generate_link(self, profile_key: str, options: LinkOptions, deadline: float | None = None) -> Link:
        """One new linking URL for the profile, retries included, finished by `deadline` (monotonic)."""
        try:
            if self.flow == "jwt":
                answer = self._call("POST", "/profiles/generateJWT", self._jwt_body(profile_key, options), deadline)
                return self._verified_jwt_link(answer, profile_key, options)
            answer = self._call("POST", "/profiles/link-sessions", options.as_request_fields(), deadline, profile_key)
            return self._verified_session_link(answer, options)
        except MalformedAnswer as error:
            log.warning("ayrshare answer unusable", extra={"reason": error.reason, "link_flow": self.flow})
            raise

    def send_connect_email(self, profile_key: str, email: dict, options: LinkOptions) -> EmailSent:
        """Ask Ayrshare to email the user a link to the linking page (never cached: each call sends one email)."""
        fields = {**options.as_request_fields(), "email": email}
        if self.flow == "jwt":
            answer = self._call("POST", "/profiles/generateJWT", {**self._jwt_body(profile_key, options), **fields})
            link = self._verified_jwt_link(answer, profile_key, options)
        else:
            answer = self._call("POST", "/profiles/link-sessions", fields, profile_key=profile_key)
            link = self._verified_session_link(answer, options)
        return EmailSent(answer.get("emailSent") is True, link.expires_at, link.session_id)

    def get_link_session(self, session_id: str) -> dict:
        """The session's state and use as Ayrshare reports them (`UpstreamNotFound` when it has no such session)."""
        answer = self._call("GET", f"/profiles/link-sessions/{quote(session_id, safe='')}")
        status = {name: answer[name] for name in SESSION_FIELDS if name in answer}
        if status.get("state") not in SESSION_STATES or not isinstance(status.get("useCount", 0), int):
            raise MalformedAnswer("session_status_unreadable")
        return status

    def revoke_link_session(self, session_id: str) -> None:
        """Revoke the session at Ayrshare (idempotent there; `UpstreamNotFound` when it is unknown)."""
        self._call("DELETE", f"/profiles/link-sessions/{quote(session_id, safe='')}")

    # -- profiles ------------------------------------------------------------------------------------------------
    def create_profile(self, title: str, fields: dict | None = None, deadline: float | None = None) -> CreatedProfile:
        """Create a User Profile in one attempt, never repeated (`DuplicateTitle` when the title is taken).

        `fields` are the optional create fields (`disableSocial`, `tags`, ...). A timeout or 5xx leaves it unknown
        whether the profile was made: the caller must not simply try again with the same title and count it twice.
        """
        try:
            answer = self.transport.call(
                "POST", "/profiles", body={**(fields or {}), "title": title}, deadline=deadline, retry=False
            )
        except AyrshareRefusal as error:
            if error.title_taken:
                raise DuplicateTitle() from None
            raise
        profile_key, ref_id = answer.get("profileKey"), answer.get("refId")
        for name, value in (("missing_profile_key", profile_key), ("missing_ref_id", ref_id)):
            if not isinstance(value, str) or not value:
                # The profile may well exist now, without its key: say so in the logs (no key, no title in them).
                log.warning("ayrshare profile created without a usable answer", extra={"reason": name})
                raise MalformedAnswer(name)
        answered_title = answer.get("title")
        return CreatedProfile(
            profile_key=profile_key,
            ref_id=ref_id,
            title=answered_title if isinstance(answered_title, str) and answered_title else title,
        )

    def delete_profile(self, profile_key: str) -> None:
        """Delete the User Profile (`UpstreamNotFound` when Ayrshare does not know the key, or no longer does)."""
        try:
            self.transport.call("DELETE", "/profiles", profile_key=profile_key)
        except AyrshareRefusal as error:
            if error.about_the_profile_key():
                raise UpstreamNotFound() from None
            raise

    def linked_accounts(self, profile_key: str) -> LinkedAccounts:
        """The networks the profile has linked, from `GET /user` (`ProfileKeyRefused` when Ayrshare refuses the key)."""
        with _key_refusals_as(ProfileKeyRefused):
            answer = self.transport.call("GET", "/user", profile_key=profile_key)
        return _linked_accounts(answer)

    def unlink_network(self, profile_key: str, network: str) -> None:
        """Unlink one network from the profile (Ayrshare answers success when it was not linked)."""
        if network not in UNLINKABLE_NETWORKS:
            # Checked here so that a refusal from Ayrshare can only be about the profile key.
            raise BadRequest(f"Ayrshare can unlink only: {', '.join(sorted(UNLINKABLE_NETWORKS))}.")
        with _key_refusals_as(ProfileKeyRefused):
            self.transport.call("DELETE", "/profiles/social", body={"platform": network}, profile_key=profile_key)

    # -- webhooks --------------------------------------------------------------------------------------------------
    def register_webhook(self, action: str, url: str, secret: str | None = None) -> None:
        """Register (or replace) the Primary Profile's hook for `action` (`POST /hook/webhook`)."""
        body = {"action": action, "url": url, **({"secret": secret} if secret else {})}
        self.transport.call("POST", "/hook/webhook", body=body)

    def unregister_webhook(self, action: str) -> None:
        """Remove the Primary Profile's hook for `action` (`DELETE /hook/webhook`)."""
        self.transport.call("DELETE", "/hook/webhook", body={"action": action})

    # -- internals -------------------------------------------------------------------------------------------
    def _check_servable(self, url: str) -> None:
        if not self.servable(url):
            raise MalformedAnswer("url_host_not_allowed" if not self.link_hosts.allows(url) else "url_not_servable")

    def _call(self, method, path, body=None, deadline=None, profile_key=None) -> dict:
        return self.transport.call(method, path, body=body, profile_key=profile_key, deadline=deadline)

    def _jwt_body(self, profile_key: str, options: LinkOptions) -> dict:
        body = {"domain": self.domain, "privateKey": self._private_key_pem, "profileKey": profile_key}
        body.update(options.as_request_fields())
        return body

    def _verified_jwt_link(self, answer: dict, profile_key: str, options: LinkOptions) -> Link:
        url, token = answer.get("url"), answer.get("token")
        if not isinstance(url, str) or not url:
            raise MalformedAnswer("missing_url")
        if not isinstance(token, str) or not token:
            raise MalformedAnswer("missing_token")
        try:
            claims = jwt.decode(
                token, self.public_key, algorithms=["RS256"], options={"require": ["exp"], "verify_aud": False}
            )
        except jwt.ExpiredSignatureError:
            raise MalformedAnswer("token_expired") from None
        except jwt.InvalidTokenError:
            raise MalformedAnswer("token_not_ours") from None
        if claims.get("profileKey") != profile_key:
            raise MalformedAnswer("token_for_other_profile")
        self._check_servable(url)
        if parse_qs(urlsplit(url).query).get("jwt") != [token]:
            raise MalformedAnswer("url_token_mismatch")
        return Link(url=url, expires_at=_checked_expiry(float(claims["exp"]), options))

    def _verified_session_link(self, answer: dict, options: LinkOptions) -> Link:
        url, session_id = answer.get("url"), answer.get("sessionId")
        if not isinstance(url, str) or not url:
            raise MalformedAnswer("missing_url")
        if not isinstance(session_id, str) or not session_id:
            raise MalformedAnswer("missing_session_id")
        self._check_servable(url)
        expires_at = _timestamp(answer.get("expiresAt"))
        if expires_at is None:
            raise MalformedAnswer("missing_expiry")
        if expires_at <= time.time():
            raise MalformedAnswer("link_expired")
        return Link(url=url, expires_at=_checked_expiry(expires_at, options), session_id=session_id)


def _linked_accounts(answer: dict) -> LinkedAccounts:
    """`activeSocialAccounts`, sorted; the vendor leaves it out when nothing is linked."""
    networks = answer.get("activeSocialAccounts", [])
    if not isinstance(networks, list) or not all(isinstance(network, str) and network for network in networks):
        raise MalformedAnswer("accounts_unreadable")
    return LinkedAccounts(networks=tuple(sorted(set(networks))))


def _checked_expiry(expires_at: float, options: LinkOptions) -> float:
    """A link may not claim to live longer than asked for: a cache would otherwise hold it for as long as it says."""
    if expires_at > time.time() + options.lifetime_minutes() * 60 + EXPIRY_SKEW_SECONDS:
        raise MalformedAnswer("expiry_beyond_request")
    return expires_at


def _timestamp(value: object) -> float | None:
    """Unix seconds from an ISO 8601 time with a zone (`2026-09-02T08:03:26.838Z`), or None."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.timestamp() if moment.tzinfo is not None else None


@contextlib.contextmanager
def _key_refusals_as(error_type: type[Exception]):
    """Ayrshare's refusals of the Profile-Key (a 404, or a refusal about the key) raised as `error_type`."""
    try:
        yield
    except UpstreamNotFound:
        raise error_type() from None
    except AyrshareRefusal as error:
        if error.about_the_profile_key():
            raise error_type() from None
        raise
