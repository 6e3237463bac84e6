"""The `/connect` use case as a plain object, testable without Flask: who asks, which user, which profile, which link.

`ConnectService.link_for()` keeps the order the product promises: authenticate first (a rejected request never
reaches Ayrshare), then validate the user id, spend the user's request limit, resolve the profile, and get the link.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..auth import Authenticator, Caller, PresentedCredentials
from ..config import Settings
from ..errors import Forbidden, ServiceError, UnknownUser
from ..profiles import ProfileDirectory, validate_user
from ..upstream import AyrshareClient, CircuitBreaker, Link, LinkOptions
from ..urls import RedirectAllowlist
from .broker import LinkBroker
from .options import resolve_options
from .store import cache_key, user_scope


@dataclass
class Timings:
    """What one request cost upstream, for the request log line and metrics."""

    upstream_seconds: float | None = None


UpstreamObserver = Callable[[str, str, float], None]  # (flow, outcome, seconds) of each call for a link


class ConnectService:
    """Everything `/connect/<user>` does, in order; the collaborators are built once by `create_app()`."""

    def __init__(
        self,
        settings: Settings,
        authenticator: Authenticator,
        profiles: ProfileDirectory,
        client: AyrshareClient,
        broker: LinkBroker,
        breaker: CircuitBreaker | None = None,
        spend_request_budget: Callable[[str], None] | None = None,
        spend_upstream_budget: Callable[[str], None] | None = None,
        observe_upstream: UpstreamObserver | None = None,
        provisioner=None,
    ):
        self.settings = settings
        self.authenticator = authenticator
        self.profiles = profiles
        self.client = client
        self.broker = broker
        self.breaker = breaker or CircuitBreaker()
        # Raise RateLimited when the user has made too many requests (RATE_LIMIT_PER_USER), or may not cause another
        # Ayrshare call now (RATE_LIMIT_UPSTREAM_PER_USER).
        self.spend_request_budget = spend_request_budget or _unlimited
        self.spend_upstream_budget = spend_upstream_budget or _unlimited
        self.observe_upstream = observe_upstream or (lambda flow, outcome, seconds: None)
        self.provisioner = provisioner  # PROFILE_AUTO_CREATE: a `Provisioner` that creates missing profiles
        self.redirects = RedirectAllowlist.parse(settings.redirect_allowed_hosts)
        self._credential_fingerprint = credential_fingerprint(settings)

    def link_for(
        self,
        user: str,
        presented: PresentedCredentials,
        query: Mapping[str, str],
        timings: Timings | None = None,
    ) -> tuple[Caller, Link]:
        caller = self.authorize(user, presented)
        profile_key = self.profiles.lookup(user)
        if profile_key is None and (self.provisioner is None or (caller.kind == "open" and not self.settings.demo)):
            raise UnknownUser()  # only an authenticated caller may make the service create (and pay for) a profile
        options = resolve_options(query, self.settings, self.redirects)
        # Counted only now: a request refused for its credentials or its input never counts against the user it names.
        self.spend_request_budget(user)
        if profile_key is None:
            deadline = time.monotonic() + self.settings.request_deadline_seconds
            profile_key, _ = self.provisioner.ensure(user, source="auto", deadline=deadline)
        key = cache_key(self.scope_of(profile_key), options)
        return caller, self.broker.get_link(key, UpstreamFetch(self, user, profile_key, options, timings))

    def authorize(self, user: str, presented: PresentedCredentials) -> Caller:
        """Who is asking, if they may act for `user` (401/403 otherwise); the user id checked too."""
        caller = self.authenticator.identify(user, presented)
        validate_user(user)
        if caller.user is not None and caller.user != user:
            raise Forbidden("This credential was issued for another user.", code="wrong_user")
        return caller

    def scope_of(self, profile_key: str) -> str:
        """The name of this profile's keys in the store (its cached links and its index of links handed out)."""
        return user_scope(self._credential_fingerprint, self.settings.domain, profile_key)


@dataclass
class UpstreamFetch:
    """One cache miss's call to Ayrshare: the user's upstream budget, the circuit breaker, then the call itself.

    Called by the broker with the monotonic deadline the call must finish by. Only a miss gets here, so a user who
    spent their upstream budget still gets cached links; an open circuit or a spent budget answers before any call is
    made and is not counted as an upstream call.
    """

    service: ConnectService
    user: str
    profile_key: str
    options: LinkOptions
    timings: Timings | None

    def __call__(self, deadline: float) -> Link:
        self.service.spend_upstream_budget(self.user)
        return self.service.breaker.call(lambda: self._call_ayrshare(deadline))

    def _call_ayrshare(self, deadline: float) -> Link:
        started = time.perf_counter()
        outcome = "error"
        try:
            link = self.service.client.generate_link(self.profile_key, self.options, deadline)
            outcome = "ok"
            return link
        except ServiceError as error:
            # A fixed slug per failure kind (bounded label values); malformed answers say which check failed.
            outcome = getattr(error, "reason", None) or error.code
            raise
        finally:
            seconds = time.perf_counter() - started
            self.service.observe_upstream(self.service.settings.link_flow, outcome, seconds)
            if self.timings is not None:
                self.timings.upstream_seconds = seconds


def _unlimited(user: str) -> None:
    """No per-user limit (rate limiting switched off)."""


def credential_fingerprint(settings: Settings) -> str:
    """Changes when the credentials or the flow change, so a rotated key or a switch of AYRSHARE_LINK_FLOW never
    serves links made the old way."""
    material = "\0".join(
        [
            settings.link_flow,
            settings.api_key,
            settings.signing_key.pem if settings.signing_key else "",
            settings.twitter_api_key or "",
            settings.twitter_api_secret or "",
        ]
    )
    return hashlib.sha256(material.encode()).hexdigest()[:32]
