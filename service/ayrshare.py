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
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from .errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from .links import Link, LinkOptions
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
RATE_LIMIT_RETRY_AFTER_CAP = 60  # seconds; Ayrshare's reset header can point minutes ahead


class MalformedAnswer(UpstreamRefused):
    code = "upstream_malformed"
    message = "Ayrshare answered with something the service cannot use. Try again; if it persists, check the logs."

    def __init__(self, reason: str):
        super().__init__()
        self.reason = reason  # a fixed slug for logs and metrics, never upstream text


@dataclass(frozen=True)
class AllowedLinkHosts:
    """`LINK_ALLOWED_HOSTS`: a bare host means https only; `http://host:port` allows exactly that origin."""

    origins: frozenset[tuple[str, str]]

    @classmethod
    def parse(cls, entries: tuple[str, ...]) -> AllowedLinkHosts:
        origins = set()
        for entry in entries:
            if "://" in entry:
                parts = urlsplit(entry)
                origins.add((parts.scheme, parts.netloc.lower()))
            else:
                origins.add(("https", entry.lower()))
        return cls(frozenset(origins))

    def allows(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc.lower()) in self.origins and not parts.username and not parts.password


class AyrshareClient:
    def __init__(self, settings: Settings, session: requests.Session | None = None):
        self.endpoint = settings.base_url.rstrip("/") + "/profiles/generateJWT"
        self.domain = settings.domain
        self.public_key = settings.signing_key.public_key
        self.link_hosts = AllowedLinkHosts.parse(settings.link_allowed_hosts)
        self.timeout = (settings.connect_timeout, settings.read_timeout)
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
        self.session = session or build_session()

    def generate_link(self, profile_key: str, options: LinkOptions) -> Link:
        body = {"domain": self.domain, "privateKey": self._private_key_pem, "profileKey": profile_key}
        body.update(options.as_request_fields())
        headers = {"Authorization": f"Bearer {self._api_key}", **self._twitter_headers}
        try:
            response = self.session.post(self.endpoint, json=body, headers=headers, timeout=self.timeout)
        except requests.Timeout:
            raise UpstreamTimeout() from None
        except requests.RequestException as error:
            log.warning("ayrshare unreachable", extra={"error_type": type(error).__name__})
            raise UpstreamUnavailable() from None
        return self._link_from_answer(response, profile_key)

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


def _retry_after(response: requests.Response) -> int:
    """Seconds to wait, from Retry-After or Ayrshare's `x-ratelimit-reset` (ms epoch), capped."""
    now = time.time()
    for header, to_seconds in (
        ("Retry-After", float),
        ("x-ratelimit-reset", lambda value: float(value) / 1000 - now),
    ):
        value = response.headers.get(header)
        if value:
            try:
                return int(min(max(to_seconds(value), 1), RATE_LIMIT_RETRY_AFTER_CAP))
            except ValueError:
                continue
    return 30


def build_session(pool_size: int = 64) -> requests.Session:
    """A pooled session. Retries cover transient network faults and 5xx answers, POST included: generateJWT
    only mints a token, so repeating it is harmless. 429 is never retried here (see RATE_LIMIT_RETRY_AFTER_CAP)."""
    retry = Retry(
        total=2,
        connect=2,
        read=1,
        status=2,
        status_forcelist=(500, 502, 503, 504),
        allowed_methods=None,
        backoff_factor=0.2,
        backoff_max=1.0,
        backoff_jitter=0.1,
        raise_on_status=False,
        respect_retry_after_header=False,
    )
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=pool_size, max_retries=retry)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
