"""Request parsing and answer helpers shared by the generateJWT, Link Sessions, Profiles and webhook endpoints.

All of them hold their answer until arrival + latency, read the same Bearer API key and count against the same
per-profile rate window; generateJWT and Link Sessions also validate the same options (expiresIn, redirect,
allowedSocial, email).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlencode

from flask import Response, jsonify, request

from emulator.config import EmulatorConfig
from emulator.errors import (
    CODE_EMAIL_NOT_SENT,
    CODE_INVALID_API_KEY,
    CODE_RATE_LIMITED,
    MESSAGE_INVALID_API_KEY,
    MESSAGE_RATE_LIMITED,
    ApiError,
    bad_parameters,
    error_response,
)
from emulator.faults import transport_fault_response
from emulator.knobs import TRANSPORT_FAULTS
from emulator.state import EmulatorState

DEFAULT_LIFETIME_MINUTES = 5
MIN_EXPIRES_IN, MAX_EXPIRES_IN = 1, 2880
# The social-linking overview: the Connect Accounts email goes out only when every one of these is given.
EMAIL_REQUIRED_FIELDS = ("contactEmail", "company", "termsUrl", "privacyUrl")


@dataclass(frozen=True)
class EmailRequest:
    """A valid `email` option: who gets the Connect Accounts email and what it says about the sender."""

    to: str
    contact_email: str
    company: str
    terms_url: str
    privacy_url: str
    bcc: object = None  # a string or a list of strings, recorded as sent

    def record(self, profile_key: str, url: str, sent_at: float) -> dict:
        """The entry `GET /_emulator/emails` lists for this email, carrying the linking URL it was sent with."""
        entry: dict = {
            "to": self.to,
            "contactEmail": self.contact_email,
            "company": self.company,
            "termsUrl": self.terms_url,
            "privacyUrl": self.privacy_url,
        }
        if self.bcc is not None:
            entry["bcc"] = self.bcc
        entry.update({"profileKey": profile_key, "url": url, "sentAt": iso_time(sent_at)})
        return entry


def held_answer(state: EmulatorState, compute: Callable[[float], Response]) -> Response:
    """Work the answer out now and send it at arrival + the latency knob.

    The latency knob is the upstream's answer time, counted from arrival. On this shared machine the emulator's own
    CPU queue (a burst of 200 RSA signatures is ~0.3 s) must not be added to the latency a hosted API would show
    (BENCHMARKS.md, scenarios 2 and 3), so the work is done first and the answer held until then.
    """
    answer_at = time.time() + state.knobs.latency_ms / 1000
    response = compute(answer_at)
    sleep_until(answer_at)
    return response


def sleep_until(moment: float) -> None:
    # Outside the state lock: concurrent slow calls must overlap.
    time.sleep(max(0.0, moment - time.time()))


def transport_fault(state: EmulatorState, answer_at: float, action: str) -> Response | None:
    """Consume an armed transport fault and return its answer, or None when none is armed."""
    fault = state.take_fault(TRANSPORT_FAULTS)
    if fault is None:
        return None
    sleep_until(answer_at)  # a dropped connection or a hang starts at answer time, not on arrival
    return transport_fault_response(fault, state.knobs.rate_limit_max, action)


def client_connection() -> str:
    """The client connection this request came over, as `address:port`."""
    return f"{request.remote_addr}:{request.environ.get('REMOTE_PORT')}"


def bearer_api_key() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def rate_limit_profile(profile_key: object, api_key: str | None) -> str:
    # The limit is per User Profile; a request without a usable profile key counts against the Primary Profile.
    if isinstance(profile_key, str) and profile_key:
        return profile_key
    return f"primary:{api_key or ''}"


def with_rate_headers(response: Response, count: int, limit: int) -> Response:
    response.headers["x-ratelimit-max"] = str(limit)
    response.headers["x-ratelimit-count"] = str(count)
    return response


def keyed_answer(
    state: EmulatorState, action: str, rate_profile: str, api_key_ok: bool, payload: Callable[[], dict]
) -> Response:
    """403 for a bad API key, 429 over the rate limit, else `payload()` (or its ApiError), with the rate headers."""
    if not api_key_ok:
        # A rejected caller is not the profile's owner, so it must not use up the profile's quota.
        count, limit = state.peek_request_count(rate_profile)
        response = error_response(ApiError(403, CODE_INVALID_API_KEY, MESSAGE_INVALID_API_KEY), action)
        return with_rate_headers(response, count, limit)
    count, limit = state.count_request(rate_profile)
    try:
        if count > limit:
            raise ApiError(429, CODE_RATE_LIMITED, MESSAGE_RATE_LIMITED)
        response = jsonify(payload())
    except ApiError as error:
        response = error_response(error, action)
    return with_rate_headers(response, count, limit)


def profile_key_answer(
    config: EmulatorConfig,
    state: EmulatorState,
    action: str,
    answer_at: float,
    payload: Callable[[str | None, str], dict],
    profile_scoped: bool = True,
) -> Response:
    """Transport faults, then `keyed_answer` of `payload(profile_key, api_key)`; the Profile-Key header is optional."""
    faulted = transport_fault(state, answer_at, action)
    if faulted is not None:
        return faulted
    api_key = bearer_api_key()
    profile_key = request.headers.get("Profile-Key") or None
    rate_profile = rate_limit_profile(profile_key if profile_scoped else None, api_key)
    api_key_ok = api_key is not None and api_key in config.api_keys
    return keyed_answer(state, action, rate_profile, api_key_ok, lambda: payload(profile_key, api_key))


def link_url(link_base: str, params: dict[str, str]) -> str:
    """`<link-base>?<params>`, appended with `&` when the base already has a query."""
    separator = "&" if "?" in link_base else "?"
    return f"{link_base}{separator}{urlencode(params)}"


def iso_time(moment: float) -> str:
    """ISO 8601 in UTC with milliseconds and `Z`, as the vendor writes times: `2026-09-02T08:03:26.838Z`."""
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expires_in_minutes(body: dict) -> int | float | None:
    value = body.get("expiresIn")
    if value is None:
        return None
    # The docs type it as a number; strings such as "30" are refused rather than coerced.
    is_number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not is_number or not MIN_EXPIRES_IN <= value <= MAX_EXPIRES_IN:
        raise bad_parameters(f"expiresIn must be a number of minutes from {MIN_EXPIRES_IN} to {MAX_EXPIRES_IN}.")
    return value


def optional_string(body: dict, name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise bad_parameters(f"{name} must be a string.")
    return value


def optional_bool(body: dict, name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise bad_parameters(f"{name} must be a boolean.")
    return value


def allowed_social(body: dict) -> tuple[str, ...]:
    value = body.get("allowedSocial")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise bad_parameters("allowedSocial must be an array of social network names.")
    return tuple(value)


def email_request(body: dict) -> EmailRequest | None:
    """The `email` option: None when absent; 400 code 101 without `to`, 400 code 333 when a sender field is missing."""
    value = body.get("email")
    if value is None:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("to"), str) or not value["to"]:
        raise bad_parameters("email must be an object with a `to` address.")
    for name in EMAIL_REQUIRED_FIELDS:
        if not isinstance(value.get(name), str) or not value[name]:
            raise ApiError(
                400,
                CODE_EMAIL_NOT_SENT,
                f"Connect Accounts email could not be sent: email.{name} is required. The email needs to, "
                f"{', '.join(EMAIL_REQUIRED_FIELDS)}.",
            )
    bcc = value.get("bcc")
    if bcc is not None and not (
        isinstance(bcc, str) or (isinstance(bcc, list) and all(isinstance(item, str) for item in bcc))
    ):
        raise bad_parameters("email.bcc must be an address or an array of addresses.")
    return EmailRequest(
        to=value["to"],
        contact_email=value["contactEmail"],
        company=value["company"],
        terms_url=value["termsUrl"],
        privacy_url=value["privacyUrl"],
        bcc=bcc,
    )
