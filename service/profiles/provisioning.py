"""`Provisioner`: creates a user's Ayrshare profile exactly once, however many requests, workers and instances ask.

The claim row comes first (the database's primary key lets one writer win); only its holder calls Ayrshare, and
everyone else waits for the row to turn active. Ayrshare returns the profile key only once, so every way the key could
be lost leaves the claim `pending` with a reason, a log line and a metric, for `flask profiles pending`.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from collections.abc import Callable

from ..errors import ServiceError, UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from ..upstream import AyrshareClient, DuplicateTitle, MalformedAnswer
from .database import DatabaseDown
from .directory import Claim, ClaimHeld, Directory, LostClaim, UserRecord
from .lookup import ProfileLookup

log = logging.getLogger(__name__)

TITLE_ATTEMPTS = 3  # the template's title, then two with a random suffix
STORE_ATTEMPTS = 4  # tries to store a key Ayrshare just returned, about 3 s in all
WAIT_POLL_SECONDS = 0.2


class CreationInProgress(UpstreamUnavailable):
    code = "profile_creation_in_progress"
    message = "This user's Ayrshare profile is being created. Try again in a moment."


class CreationUnresolved(ServiceError):
    status = 409
    code = "profile_creation_unresolved"
    message = (
        "Creating this user's Ayrshare profile did not finish cleanly; an operator must resolve it "
        "(flask --app service profiles pending)."
    )


class Provisioner:
    """`ensure(user)`: the user's profile key, creating the profile at Ayrshare if they have none.

    lease_seconds: how long a claim may stay pending before it is reported as unresolved (at least one Ayrshare call).
    spend_budget: raises `RateLimited` past PROFILE_CREATE_MAX_PER_HOUR (spent only by the claim's holder).
    on_event: hears "created", "duplicate_title", "refused", "outcome_unknown", "not_stored", "unresolved".
    """

    def __init__(
        self,
        directory: Directory,
        lookup: ProfileLookup,
        client: AyrshareClient,
        title_template: str,
        create_fields: dict,
        lease_seconds: float,
        spend_budget: Callable[[str], None] = lambda user: None,
        on_event: Callable[[str], None] = lambda event: None,
        breaker=None,
    ):
        self.directory = directory
        self.lookup = lookup
        self.client = client
        self.title_template = title_template
        self.create_fields = dict(create_fields)
        self.lease_seconds = lease_seconds
        self.spend_budget = spend_budget
        self.on_event = on_event
        self.breaker = breaker

    def ensure(self, user: str, source: str = "auto", deadline: float | None = None) -> tuple[str, bool]:
        """(profile key, created now): the existing key, or a new profile's, or an error saying why not."""
        existing = self.directory.get(user)
        if existing is not None and existing.state == "active":
            return existing.profile_key, False
        try:
            claim = self.directory.claim(user, self.title_template.replace("{user}", user), self.lease_seconds)
        except ClaimHeld as held:
            return self._wait_for(held.record, deadline), False
        try:
            self.spend_budget(user)
        except ServiceError:
            self.directory.release(claim)
            raise
        return self._create(claim, source), True

    def _create(self, claim: Claim, source: str) -> str:
        for attempt in range(TITLE_ATTEMPTS):
            sent = False

            def create(title=claim.title):
                nonlocal sent
                sent = True
                return self.client.create_profile(title, self.create_fields)

            try:
                created = self.breaker.call(create) if self.breaker else create()
            except DuplicateTitle:
                self.on_event("duplicate_title")
                if attempt + 1 == TITLE_ATTEMPTS:
                    self.directory.release(claim)
                    raise UpstreamRefused(
                        "Ayrshare already has profiles with this user's titles; check PROFILE_TITLE_TEMPLATE.",
                        code="profile_title_taken",
                    ) from None
                title = f"{claim.title.split(' ~')[0]} ~{secrets.token_hex(3)}"
                try:
                    claim = self.directory.retitle(claim, title, self.lease_seconds)
                except LostClaim:  # an operator released the claim meanwhile; nothing was created
                    raise CreationInProgress(retry_after=1) from None
                continue
            except (UpstreamTimeout, UpstreamUnavailable, MalformedAnswer) as error:
                never_asked = not sent or not getattr(error, "request_sent", True)  # not called, or no connection
                if never_asked or getattr(error, "code", "") == "upstream_rate_limited":
                    self.directory.release(claim)  # never asked, or refused with a 429: nothing was created
                    raise
                # The request left and no answer came back: a profile may exist that only Ayrshare's dashboard
                # can tell us about. Keep the claim, so no second profile is ever made for this user.
                self._mark(claim, "outcome_unknown")
                self.on_event("outcome_unknown")
                log.error(
                    "profile creation outcome unknown; claim kept",
                    extra={"user": claim.user, "profile_title": claim.title},
                )
                raise
            except ServiceError:
                self.on_event("refused")
                self.directory.release(claim)  # Ayrshare answered with a refusal: nothing was created
                raise
            return self._store(claim, created, source)
        raise AssertionError("unreachable")

    def _store(self, claim: Claim, created, source: str) -> str:
        for attempt in range(STORE_ATTEMPTS):
            try:
                self.directory.complete(claim, created.profile_key, created.ref_id, created.title, source)
                break
            except LostClaim:
                # An operator released the claim (or attached a key over it) meanwhile: keep this key only if the
                # user still has none; never overwrite what the operator attached.
                try:
                    self.directory.put(
                        claim.user, created.profile_key, source, created.ref_id, created.title, replace=False
                    )
                    break
                except ClaimHeld as held:
                    if held.record.state == "active" and held.record.profile_key == created.profile_key:
                        break  # our own earlier attempt was stored; only its answer was lost
                    self._not_stored(claim, created)
            except DatabaseDown:
                if attempt + 1 == STORE_ATTEMPTS:
                    self._not_stored(claim, created)
                time.sleep(0.5 * 2**attempt)
        self.on_event("created")
        self.lookup.changed(claim.user)
        log.info("profile created", extra={"user": claim.user, "ref_id": created.ref_id, "profile_source": source})
        return created.profile_key

    def _not_stored(self, claim: Claim, created) -> None:
        self._mark(claim, "not_stored")  # when the database takes even that; else the lease expiring tells the same
        self.on_event("not_stored")
        log.error(
            "profile created at Ayrshare but its key was not stored; claim kept for an operator",
            extra={"user": claim.user, "ref_id": created.ref_id, "profile_title": created.title},
        )
        raise DatabaseDown("The profile was created but could not be stored; an operator has been alerted.")

    def _mark(self, claim: Claim, reason: str) -> None:
        with contextlib.suppress(DatabaseDown, LostClaim):  # else the lease expiring tells the same, a little later
            self.directory.mark_pending(claim, reason)

    def _wait_for(self, record: UserRecord, deadline: float | None) -> str:
        """Another request holds the claim: wait for its result until our deadline, without calling Ayrshare."""
        deadline = deadline or time.monotonic() + self.lease_seconds
        while True:
            if record.state == "active":
                return record.profile_key
            if not record.in_flight():
                self.on_event("unresolved")
                log.warning("profile creation unresolved; see flask profiles pending", extra={"user": record.user})
                raise CreationUnresolved()
            if time.monotonic() + WAIT_POLL_SECONDS > deadline:
                raise CreationInProgress(retry_after=2)
            time.sleep(WAIT_POLL_SECONDS)
            current = self.directory.get(record.user)
            if current is None:
                raise CreationInProgress(retry_after=1)  # the holder gave up (refused): the next try may claim
            record = current
