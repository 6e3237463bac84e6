"""The `/connect` use case as a plain object: who asks → which user → which profile → which link.

`ConnectService.link_for()` holds the order the product promises — authenticate first (a rejected request never
reaches Ayrshare), then validate the user id, resolve the profile, and get a link through the single-flight broker —
so that the route stays a few lines and the whole flow can be tested without Flask.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from . import metrics
from .ayrshare import AyrshareClient
from .callers import Authenticator, Caller, PresentedCredentials
from .circuit import CircuitBreaker
from .errors import BadRequest, Forbidden, ServiceError, UnknownUser
from .links import Link, LinkBroker, LinkOptions, cache_key
from .options import resolve_options
from .profiles import ProfileDirectory
from .settings import Settings

# Conservative on purpose: ids appear in signed strings ("<user>:<expires>"), cache keys and logs.
USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,127}")


def validate_user(user: str) -> str:
    if not USER_ID.fullmatch(user):
        raise BadRequest(
            "The user id must be 1-128 characters: letters, digits and . _ @ + - (starting with a letter or digit).",
            code="bad_user_id",
        )
    return user


@dataclass
class Timings:
    """What one request cost upstream, for the request log line and metrics."""

    upstream_seconds: float | None = None


class ConnectService:
    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        profiles: ProfileDirectory,
        client: AyrshareClient,
        broker: LinkBroker,
        breaker: CircuitBreaker | None = None,
    ):
        self.settings = settings
        self.authenticator = authenticator
        self.profiles = profiles
        self.client = client
        self.broker = broker
        self.breaker = breaker or CircuitBreaker()
        self._credential_fingerprint = _fingerprint(settings)

    def link_for(
        self,
        user: str,
        presented: PresentedCredentials,
        query: Mapping[str, str],
        timings: Timings | None = None,
    ) -> tuple[Caller, Link]:
        caller = self.authenticator.identify(user, presented)
        validate_user(user)
        if caller.user is not None and caller.user != user:
            raise Forbidden("This credential was issued for another user.", code="wrong_user")
        profile_key = self.profiles.lookup(user)
        if profile_key is None:
            raise UnknownUser()
        options = resolve_options(query, self.settings)
        key = cache_key(self._credential_fingerprint, self.settings.domain, profile_key, options)
        return caller, self.broker.get_link(key, lambda: self._fetch(profile_key, options, timings))

    def _fetch(self, profile_key: str, options: LinkOptions, timings: Timings | None) -> Link:
        # An open circuit answers before any call is made, so it is not counted as an upstream call.
        return self.breaker.call(lambda: self._call_ayrshare(profile_key, options, timings))

    def _call_ayrshare(self, profile_key: str, options: LinkOptions, timings: Timings | None) -> Link:
        started = time.perf_counter()
        outcome = "error"
        try:
            link = self.client.generate_link(profile_key, options)
            outcome = "ok"
            return link
        except ServiceError as error:
            outcome = error.code  # a fixed slug per failure kind: bounded label values
            raise
        finally:
            seconds = time.perf_counter() - started
            metrics.observe_upstream_call(outcome, seconds)
            if timings is not None:
                timings.upstream_seconds = seconds


def _fingerprint(settings: Settings) -> str:
    """Changes when the credentials change, so rotating a key never serves links minted with the old one."""
    material = "\0".join([settings.api_key, settings.signing_key.pem, settings.twitter_api_key or ""])
    return hashlib.sha256(material.encode()).hexdigest()[:32]
