"""The HTTP client for Ayrshare's `POST /profiles/generateJWT`, and the checks on what it answers.

A `Link` is only made from a token that verifies against our own key, names the profile we asked for, and sits in a
URL on an allowed linking host; anything else is an upstream fault (502). Nothing from Ayrshare's answer body is copied
into errors or logs: upstream messages can echo request fields.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from ..config import Settings
from ..errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from ..urls import web_origin
from .models import Link, LinkOptions

log = logging.getLogger(__name__)

# Ayrshare error codes whose fix is a setting of ours: the message names the setting to check.
_REFUSAL_HINTS = {
    102: ("bad_api_key", "Ayrshare rejected the API key: check AYRSHARE_API_KEY."),
    189: ("bad_private_key", "Ayrshare could not use the private key: check AYRSHARE_PRIVATE_KEY."),
    188: (
        "bad_twitter_keys",
        "Ayrshare needs both X/Twitter keys: check AYRSHARE_TWITTER_API_KEY and _SECRET.",
    ),
    434: (
        "bad_twitter_keys",
        "Ayrshare got X/Twitter keys twice: check AYRSHARE_TWITTER_API_KEY and _SECRET.",
    ),
}
RATE_LIMIT_RETRY_AFTER_CAP = 60  # seconds told to our caller; Ayrshare's reset header can point minutes ahead
RETRY_WAIT_CAP = 3.0  # seconds a worker may sleep between attempts inside one request
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
RETRIES = {"connect": 2, "read": 1, "status": 1}  # repeats allowed per kind of fault
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 2.0
POOL_SIZE = 128  # connections kept per worker: as many as the default GUNICORN_THREADS can have in flight


class MalformedAnswer(UpstreamRefused):
    code = "upstream_malformed"
    message = "Ayrshare answered with something the service cannot use. Try again; if it persists, check the logs."

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason  # a fixed slug for logs and metrics, never upstream text


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


class AyrshareClient:
    """Calls `POST /profiles/generateJWT` and turns the answer into a verified `Link` or one of our upstream errors."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.endpoint = settings.base_url.rstrip("/") + "/profiles/generateJWT"
        self.domain = settings.domain
        self.public_key = settings.signing_key.public_key
        self.link_hosts = AllowedLinkHosts.parse(settings.link_allowed_hosts)
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.deadline_seconds = settings.deadline_seconds
        self._api_key = settings.api_key
        self._private_key_pem = settings.signing_key.pem
        self._twitter_headers = (
            {
                "X-Twitter-OAuth1-Api-Key": settings.twitter_api_key,
                "X-Twitter-OAuth1-Api-Secret": settings.twitter_api_secret,
            }
            if settings.twitter_api_key
            else {}
        )
        self.session = session or build_session(self.endpoint)

    def generate_link(self, profile_key: str, options: LinkOptions, deadline: float | None = None) -> Link:
        """One generateJWT call, retries included, finished by `deadline` (monotonic; default: our own deadline)."""
        body = {"domain": self.domain, "privateKey": self._private_key_pem, "profileKey": profile_key}
        body.update(options.as_request_fields())
        headers = {"Authorization": f"Bearer {self._api_key}", **self._twitter_headers}
        response = self._post(body, headers, deadline)
        try:
            return self._link_from_answer(response, profile_key)
        except MalformedAnswer as error:
            log.warning("ayrshare answer unusable", extra={"reason": error.reason, "http_status": response.status_code})
            raise

    def _post(self, body: dict, headers: dict, deadline: float | None) -> requests.Response:
        """POST with retries on transient faults (generateJWT only mints a token, so repeating it is harmless).

        A dropped or timed-out answer and a 429/5xx status are each repeated once (every 429 counts toward Ayrshare's
        suspension limit), a failed connection twice; no attempt starts that could not finish by `deadline`.
        """
        started = time.monotonic()
        deadline = min(deadline or started + self.deadline_seconds, started + self.deadline_seconds)
        connect_timeout = self.timeout[0]
        read_timeout = min(self.timeout[1], deadline - started - connect_timeout)
        if read_timeout < 0.1:  # the request spent its time waiting for another caller's attempt
            raise UpstreamTimeout()
        retries_left = dict(RETRIES)
        for attempt in itertools.count():
            try:
                response = self.session.post(
                    self.endpoint, json=body, headers=headers, timeout=(connect_timeout, read_timeout)
                )
            except requests.RequestException as error:
                kind, outcome, wait = _fault_kind(error), error, _backoff(attempt)
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response
                kind, outcome = "status", response
                wait = min(_rate_limit_wait(response.headers) or _backoff(attempt), RETRY_WAIT_CAP)
            out_of_time = time.monotonic() + wait + connect_timeout + read_timeout > deadline
            if attempt + 1 >= MAX_ATTEMPTS or not retries_left[kind] or out_of_time:
                if isinstance(outcome, requests.Response):
                    return outcome
                raise _transport_error(outcome) from None
            retries_left[kind] -= 1
            time.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises

    def _link_from_answer(self, response: requests.Response, profile_key: str) -> Link:
        if response.status_code == 429:
            raise UpstreamUnavailable(
                "Ayrshare is rate-limiting this service. Try again in a minute.",
                code="upstream_rate_limited",
                retry_after=_retry_after(response),
            )
        if response.status_code >= 500:
            raise UpstreamUnavailable()
        try:
            answer = response.json()
        except ValueError:
            raise MalformedAnswer("non_json") from None
        if not isinstance(answer, dict):
            raise MalformedAnswer("not_an_object")
        if response.status_code >= 400 or answer.get("status") == "error":
            code = answer.get("code")
            # Only a plain number is taken from the answer: anything else could carry echoed request text.
            code = code if isinstance(code, int) and not isinstance(code, bool) else None
            slug, message = _REFUSAL_HINTS.get(code, ("upstream_refused", None))
            log.warning("ayrshare refused", extra={"http_status": response.status_code, "ayrshare_code": code})
            raise UpstreamRefused(message or f"Ayrshare refused the request (Ayrshare code {code}).", code=slug)
        return self._verified_link(answer, profile_key)

    def _verified_link(self, answer: dict, profile_key: str) -> Link:
        url, token = answer.get("url"), answer.get("token")
        if not isinstance(url, str) or not url:
            raise MalformedAnswer("missing_url")
        if not isinstance(token, str) or not token:
            raise MalformedAnswer("missing_token")
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"require": ["exp"], "verify_aud": False},
            )
        except jwt.ExpiredSignatureError:
            raise MalformedAnswer("token_expired") from None
        except jwt.InvalidTokenError:
            raise MalformedAnswer("token_not_ours") from None
        if claims.get("profileKey") != profile_key:
            raise MalformedAnswer("token_for_other_profile")
        if not self.link_hosts.allows(url):
            raise MalformedAnswer("url_host_not_allowed")
        if parse_qs(urlsplit(url).query).get("jwt", [token]) != [token]:
            raise MalformedAnswer("url_token_mismatch")
        return Link(url=url, expires_at=float(claims["exp"]))


def _transport_error(error: requests.RequestException) -> UpstreamTimeout | UpstreamUnavailable:
    """No answer at all: a timeout (504) or an unreachable Ayrshare (503). Retries exhausted on a read timeout
    surface from requests as a ConnectionError wrapping MaxRetryError, so look at the root cause."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(error, requests.Timeout) or isinstance(reason, ReadTimeoutError):
        log.warning("ayrshare timed out", extra={"error_type": type(error).__name__})
        return UpstreamTimeout()
    log.warning("ayrshare unreachable", extra={"error_type": type(reason or error).__name__})
    return UpstreamUnavailable()


def _retry_after(response: requests.Response) -> int:
    """Seconds a caller should wait, from Retry-After or Ayrshare's `x-ratelimit-reset`, capped."""
    wait = _rate_limit_wait(response.headers)
    return int(min(max(wait if wait is not None else 30, 1), RATE_LIMIT_RETRY_AFTER_CAP))


def _rate_limit_wait(headers) -> float | None:
    """Retry-After (seconds) or Ayrshare's `x-ratelimit-reset` (epoch milliseconds), as seconds from now."""
    value = headers.get("Retry-After")
    if value and value.strip().isdigit():
        return float(value)
    reset = headers.get("x-ratelimit-reset")
    try:
        return max(float(reset) / 1000 - time.time(), 0.0) if reset else None
    except ValueError:
        return None


def _fault_kind(error: requests.RequestException) -> str:
    """Which retry allowance a failed attempt spends: "connect" (no connection made) or "read" (no usable answer)."""
    reason = getattr(error.args[0], "reason", None) if error.args else None
    if isinstance(error, requests.ConnectTimeout) or isinstance(reason, NewConnectionError):
        return "connect"
    return "read"


def _backoff(attempt: int) -> float:
    """0.25 s, then 0.5 s, ... at most 2 s, with up to 25 % jitter so retries from many workers spread out."""
    return min(BACKOFF_SECONDS * 2**attempt, BACKOFF_MAX_SECONDS) * (1 + random.uniform(0, 0.25))


def build_session(url: str) -> requests.Session:
    """A pooled session for calls to `url` that reads the proxy and CA bundle environment (`HTTPS_PROXY`, `NO_PROXY`,
    `REQUESTS_CA_BUNDLE`) once, at start, and ignores `~/.netrc`, which would replace the API key's header."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_SIZE)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    settled = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = settled["proxies"]
    session.verify = settled["verify"]
    session.trust_env = False
    return session
