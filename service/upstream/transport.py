"""Talking HTTP to Ayrshare: one pooled session, retries on transient faults within a deadline (for calls that are safe
to repeat), and the mapping of Ayrshare's refusals onto our errors.

Nothing from Ayrshare's answer body is copied into errors or logs: upstream messages can echo request fields.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import time

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.exceptions import NewConnectionError, ReadTimeoutError

from ..config import Settings
from ..errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable

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
    333: ("email_not_sent", "Ayrshare could not send the Connect Accounts email: check its fields."),
}
API_KEY_REFUSED_CODE = 102  # Ayrshare's documented code for an invalid API key (HTTP 403)
# Public integrations match Ayrshare's duplicate-title answer on its wording (HTTP 400, "Profile title already
# exists"); the docs give it no code of its own. The words are only tested, never copied.
TITLE_TAKEN_WORDS = "title already exists"
RATE_LIMIT_HOLD_SECONDS = 300  # after a 429 without a reset time: Ayrshare's documented 5-minute window
RETRY_WAIT_CAP = 3.0  # seconds a worker may sleep between attempts inside one request
# Not 429: every 429 counts toward Ayrshare's suspension of the profile (1,000 in 24 h), so it is never repeated.
RETRY_STATUSES = frozenset({500, 502, 503, 504})
RETRIES = {"connect": 2, "read": 1, "status": 1}  # repeats allowed per kind of fault
MAX_ATTEMPTS = 3
BACKOFF_SECONDS = 0.25
BACKOFF_MAX_SECONDS = 2.0
CHUNK_BYTES = 16384
MAX_ANSWER_BYTES = 1 << 20  # Ayrshare's answers are a few hundred bytes
POOL_SIZE = 128  # connections kept per worker: as many as the default GUNICORN_THREADS can have in flight


class MalformedAnswer(UpstreamRefused):
    code = "upstream_malformed"
    message = "Ayrshare answered with something the service cannot use. Try again; if it persists, check the logs."

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason  # a fixed slug for logs and metrics, never upstream text


class AyrshareRefusal(UpstreamRefused):
    """Ayrshare answered with an error: its HTTP status and numeric code (never its text) for callers to branch on."""

    def __init__(
        self, message: str | None, *, code: str, upstream_status: int, upstream_code: int | None, title_taken: bool
    ):
        super().__init__(message, code=code)
        self.upstream_status = upstream_status
        self.upstream_code = upstream_code
        self.title_taken = title_taken  # the answer said a profile title already exists (a create's duplicate)

    def about_the_profile_key(self) -> bool:
        """A 4xx refusal other than of the API key (code 102) or of the rate: on a call whose only input is the
        Profile-Key header, it can only be about that key."""
        return self.upstream_status in (400, 401, 403, 404) and self.upstream_code != API_KEY_REFUSED_CODE


class DuplicateTitle(UpstreamRefused):
    """Ayrshare refused a profile create because another User Profile of the account already has that title."""

    code = "duplicate_title"
    message = "Ayrshare already has a User Profile with this title."


class ProfileKeyRefused(UpstreamRefused):
    """Ayrshare refused the profile key (unknown, deleted or another account's): the caller sent a key we cannot use."""

    status = 422
    code = "profile_key_refused"
    message = "Ayrshare does not accept this profile key: check that it belongs to a live User Profile of this account."


class UpstreamNotFound(UpstreamRefused):
    """Ayrshare answered 404: the thing asked about does not exist (or no longer does)."""

    status = 404
    code = "not_found"
    message = "Ayrshare has no such item."


class AyrshareTransport:
    """Sends one request to Ayrshare with the API key and our retry rules; answers the JSON object of a success."""

    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.base_url = settings.base_url.rstrip("/")
        self.timeout = (settings.connect_timeout, settings.read_timeout)
        self.deadline_seconds = settings.deadline_seconds
        self._headers = {"Authorization": f"Bearer {settings.api_key}"}
        if settings.twitter_api_key:
            self._headers["X-Twitter-OAuth1-Api-Key"] = settings.twitter_api_key
            self._headers["X-Twitter-OAuth1-Api-Secret"] = settings.twitter_api_secret or ""
        self.session = session or build_session(self.base_url)

    def call(
        self,
        method: str,
        path: str,
        *,
        body: dict | None = None,
        profile_key: str | None = None,
        deadline: float | None = None,
        retry: bool = True,
    ) -> dict:
        """The answer object of a success, or one of our upstream errors.

        `retry=False` sends exactly one attempt: for calls that are not safe to repeat, such as a profile create (a
        timed-out or failed attempt may still have created a paid profile, and a repeat would create a second one).
        """
        headers = dict(self._headers)
        if profile_key is not None:
            headers["Profile-Key"] = profile_key
        response, content = self._send(method, self.base_url + path, body, headers, deadline, retry)
        return _answer_of(response, content)

    def _send(
        self, method: str, url: str, body: dict | None, headers: dict, deadline: float | None, retry: bool
    ) -> tuple[requests.Response, bytes]:
        """Send with retries on transient faults, finished by `deadline` (monotonic; default: our own deadline); the
        answer and its body.

        A dropped or timed-out answer and a 5xx status are each repeated once, a failed connection twice, a 429 never
        (and nothing when `retry` is false); no attempt starts that could not finish by `deadline`.
        """
        started = time.monotonic()
        deadline = min(deadline or started + self.deadline_seconds, started + self.deadline_seconds)
        connect_timeout = self.timeout[0]
        read_timeout = min(self.timeout[1], deadline - started - connect_timeout)
        if read_timeout < 0.1:  # the request spent its time waiting for another caller's attempt
            failure = UpstreamTimeout()
            failure.request_sent = False
            raise failure
        retries_left = dict(RETRIES) if retry else dict.fromkeys(RETRIES, 0)
        reached = False  # whether any attempt got as far as sending the request
        for attempt in itertools.count():
            try:
                # Never followed: requests would re-send the Profile-Key, the X/Twitter keys and (on a 307) the
                # private key in the body to wherever the answer points.
                response = self.session.request(
                    method,
                    url,
                    json=body,
                    headers=headers,
                    timeout=(connect_timeout, read_timeout),
                    allow_redirects=False,
                    stream=True,  # the body is read by _read_within, under the deadline
                )
            except requests.RequestException as error:
                kind, outcome, wait = _fault_kind(error), error, _backoff(attempt)
                reached = reached or kind != "connect"
            else:
                if response.status_code not in RETRY_STATUSES:
                    return response, _read_within(response, deadline)
                response.close()
                kind, outcome = "status", response
                wait = min(_backoff(attempt), RETRY_WAIT_CAP)
            out_of_time = time.monotonic() + wait + connect_timeout + read_timeout > deadline
            if attempt + 1 >= MAX_ATTEMPTS or not retries_left[kind] or out_of_time:
                if isinstance(outcome, requests.Response):
                    return outcome, b""
                failure = _transport_error(outcome)
                failure.request_sent = reached  # False: no connection was ever made, so Ayrshare saw nothing
                raise failure from None
            retries_left[kind] -= 1
            time.sleep(wait)
        raise AssertionError("unreachable")  # the loop returns or raises


class RateLimitedUpstream(UpstreamUnavailable):
    """Ayrshare answered 429: no call for this link may be made for `hold_seconds` (by any worker or instance)."""

    code = "upstream_rate_limited"
    message = "Ayrshare is rate-limiting this user's profile. Try again later."

    def __init__(self, hold_seconds: float):
        super().__init__(retry_after=max(1, int(hold_seconds + 0.999)))
        self.hold_seconds = hold_seconds


def _read_within(response: requests.Response, deadline: float) -> bytes:
    """The whole body by `deadline`. The read timeout bounds each read only, so an answer trickling in a byte at a
    time would otherwise run on for as long as it trickles."""
    content = bytearray()
    try:
        while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
            content += chunk
            if time.monotonic() > deadline:
                log.warning("ayrshare answered too slowly", extra={"answer_bytes": len(content)})
                raise UpstreamTimeout()
            if len(content) > MAX_ANSWER_BYTES:
                raise MalformedAnswer("too_large")
    except (urllib3.exceptions.HTTPError, OSError) as error:  # the answer broke off or stalled
        failure = UpstreamTimeout() if isinstance(error, ReadTimeoutError) else UpstreamUnavailable()
        log.warning("ayrshare's answer broke off", extra={"error_type": type(error).__name__})
        raise failure from None
    finally:
        response.close()
    return bytes(content)


def _answer_of(response: requests.Response, content: bytes) -> dict:
    if response.status_code == 429:
        wait = _rate_limit_wait(response.headers)
        # "Retry now" (Retry-After: 0) still holds for a second: every 429 counts toward a suspension.
        raise RateLimitedUpstream(RATE_LIMIT_HOLD_SECONDS if wait is None else max(wait, 1.0))
    if response.status_code >= 500:
        raise UpstreamUnavailable()
    if 300 <= response.status_code < 400:
        log.warning(
            "ayrshare answered with a redirect; check AYRSHARE_BASE_URL", extra={"http_status": response.status_code}
        )
        raise MalformedAnswer("redirect")
    try:
        answer = json.loads(content)
    except ValueError:
        raise MalformedAnswer("non_json") from None
    if not isinstance(answer, dict):
        raise MalformedAnswer("not_an_object")
    if response.status_code == 404:
        raise UpstreamNotFound()
    if response.status_code >= 400 or answer.get("status") == "error":
        code = answer.get("code")
        # Only a plain number is taken from the answer: anything else could carry echoed request text.
        code = code if isinstance(code, int) and not isinstance(code, bool) else None
        slug, message = _REFUSAL_HINTS.get(code, ("upstream_refused", None))
        log.warning("ayrshare refused", extra={"http_status": response.status_code, "ayrshare_code": code})
        raise AyrshareRefusal(
            message or f"Ayrshare refused the request (Ayrshare code {code}).",
            code=slug,
            upstream_status=response.status_code,
            upstream_code=code,
            title_taken=_says_title_taken(answer),
        )
    return answer


def _says_title_taken(answer: dict) -> bool:
    message = answer.get("message")
    return isinstance(message, str) and TITLE_TAKEN_WORDS in message.lower()


def _transport_error(error: requests.RequestException) -> UpstreamTimeout | UpstreamUnavailable:
    """No answer at all: a timeout (504) or an unreachable Ayrshare (503). Retries exhausted on a read timeout
    surface from requests as a ConnectionError wrapping MaxRetryError, so look at the root cause."""
    reason = _root_cause(error)
    if isinstance(error, requests.Timeout) or isinstance(reason, ReadTimeoutError):
        log.warning("ayrshare timed out", extra={"error_type": type(error).__name__})
        return UpstreamTimeout()
    log.warning("ayrshare unreachable", extra={"error_type": type(reason or error).__name__})
    return UpstreamUnavailable()


def _rate_limit_wait(headers) -> float | None:
    """Retry-After (seconds) or Ayrshare's `x-ratelimit-reset` (epoch milliseconds), as seconds from now."""
    value = headers.get("Retry-After")
    if value and value.strip().isdigit():
        return float(value)
    reset = headers.get("x-ratelimit-reset")
    try:
        left = float(reset) / 1000 - time.time() if reset else None
    except ValueError:
        return None
    return left if left is not None and left > 0 else None  # a reset already past: our clocks disagree, so unknown


def _fault_kind(error: requests.RequestException) -> str:
    """Which retry allowance a failed attempt spends: "connect" (no connection made) or "read" (no usable answer)."""
    reason = _root_cause(error)
    if isinstance(error, requests.ConnectTimeout) or isinstance(reason, NewConnectionError):
        return "connect"
    return "read"


def _root_cause(error: requests.RequestException) -> BaseException | None:
    """urllib3's error behind a requests error, where requests kept it (else None)."""
    # requests puts urllib3's MaxRetryError first in a ConnectionError's args, its `reason` the root cause: not
    # documented (checked against requests 2.34.2); tests/test_profiles_api.py's
    # test_an_ayrshare_that_refuses_the_connection_leaves_no_claim_behind fails if that changes.
    return getattr(error.args[0], "reason", None) if error.args else None


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
