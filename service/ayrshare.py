"""The HTTP client for Ayrshare's `POST /profiles/generateJWT`, and the checks on what it answers.

One `requests.Session` (pooled connections, timeouts, retries on transient faults) per process. Every answer is mapped
to a `Link` or to one of the service's upstream errors; a `Link` is only made from a token that verifies against the
public half of our own private key, whose `profileKey` claim is the one we asked for, inside a URL on an allowed
linking host. Anything else is an upstream fault (502): the service never serves a URL it cannot vouch for.

Nothing from Ayrshare's answer body is copied into errors or logs: upstream messages can echo request fields.
"""

from __future__ import annotations

import logging
import time
from contextvars import ContextVar
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from requests.adapters import DEFAULT_POOLSIZE, HTTPAdapter
from urllib3.exceptions import MaxRetryError, ReadTimeoutError, ResponseError
from urllib3.util.retry import Retry

from .errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from .links import Link, LinkOptions
from .origins import web_origin
from .settings import Settings

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

    def size_pool(self, calls_at_once: int) -> None:
        """Keep as many connections to Ayrshare open as this process can have calls in flight (under gunicorn, a
        worker's threads), before any call is made.

        A smaller pool still opens a connection per call in flight, but after a burst it closes the ones it has no
        room for (urllib3 logs "Connection pool is full, discarding connection" for each), and the next burst opens
        them again, each with its own TCP and TLS handshake.
        """
        self.session = build_session(self.endpoint, pool_size=max(1, calls_at_once))

    def generate_link(self, profile_key: str, options: LinkOptions, deadline: float | None = None) -> Link:
        """One generateJWT call, retries included, finished by `deadline` (monotonic; default: our own deadline)."""
        body = {"domain": self.domain, "privateKey": self._private_key_pem, "profileKey": profile_key}
        body.update(options.as_request_fields())
        headers = {"Authorization": f"Bearer {self._api_key}", **self._twitter_headers}
        started = time.monotonic()
        deadline = min(deadline or started + self.deadline_seconds, started + self.deadline_seconds)
        read_timeout = min(self.timeout[1], deadline - started - self.timeout[0])
        if read_timeout < 0.1:  # the request spent its time waiting for another caller's attempt
            raise UpstreamTimeout()
        token = _call_deadline.set((deadline, self.timeout[0] + read_timeout))
        try:
            response = self.session.post(
                self.endpoint, json=body, headers=headers, timeout=(self.timeout[0], read_timeout)
            )
        except requests.RequestException as error:
            raise _transport_error(error) from None
        finally:
            _call_deadline.reset(token)
        try:
            return self._link_from_answer(response, profile_key)
        except MalformedAnswer as error:
            log.warning("ayrshare answer unusable", extra={"reason": error.reason, "http_status": response.status_code})
            raise

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


# The deadline of the generateJWT call in progress on this thread/greenlet, and the longest one attempt can take.
_call_deadline: ContextVar[tuple[float, float] | None] = ContextVar("ayrshare_call_deadline", default=None)


class DeadlineRetry(Retry):
    """urllib3 Retry that never starts an attempt which could not finish before the request's deadline.

    Backoff is exponential with jitter; a Retry-After / `x-ratelimit-reset` wait is honoured but capped
    (`retry_after_max`), and a wait that would overrun the deadline ends the retries instead of sleeping.
    """

    def increment(self, method=None, url=None, response=None, error=None, _pool=None, _stacktrace=None):
        new = super().increment(method, url, response, error, _pool, _stacktrace)
        budget = _call_deadline.get()
        if budget is not None:
            deadline, attempt_seconds = budget
            wait = (self.get_retry_after(response) if response is not None else None) or new.get_backoff_time()
            if time.monotonic() + wait + attempt_seconds > deadline:
                raise MaxRetryError(
                    _pool, url, error or ResponseError(f"no time left to retry ({response and response.status})")
                )
        return new

    def get_retry_after(self, response):
        wait = _rate_limit_wait(response.headers)
        return None if wait is None else min(wait, self.retry_after_max)


def build_session(url: str, pool_size: int = DEFAULT_POOLSIZE) -> requests.Session:
    """A pooled session for calls to `url`, with deadline-bounded retries on connection errors, 5xx and 429, POST
    included: generateJWT only mints a token, so repeating it is harmless."""
    retry = DeadlineRetry(
        total=2,
        connect=2,
        read=1,
        status=1,  # one repeat of a 429/5xx per request: each 429 counts toward Ayrshare's suspension limit
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,
        backoff_factor=0.25,
        backoff_max=2.0,
        backoff_jitter=0.25,
        raise_on_status=False,
        respect_retry_after_header=True,
        retry_after_max=RETRY_WAIT_CAP,
    )
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    settle_environment(session, url)
    return session


def settle_environment(session: requests.Session, url: str) -> None:
    """Apply the proxy (`HTTPS_PROXY`, `NO_PROXY`, ...) and CA bundle (`REQUESTS_CA_BUNDLE`) environment once.

    requests reads them again on every call (`trust_env`), scanning the whole environment twice: 0.8 ms of the
    4.9 ms a cache miss cost (BENCHMARKS.md). The service calls one URL and its environment does not change while it
    runs, so the answer is the same every time. Turning `trust_env` off also keeps a `~/.netrc` entry from replacing
    the API key's Authorization header.
    """
    settled = session.merge_environment_settings(url, {}, None, None, None)
    session.proxies = settled["proxies"]
    session.verify = settled["verify"]
    session.trust_env = False
