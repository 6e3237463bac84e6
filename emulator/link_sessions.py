"""Ayrshare's Link Sessions: `POST /api/profiles/link-sessions` and `GET`/`DELETE /api/profiles/link-sessions/<id>`.

The order of checks is generateJWT's: latency and transport faults, then the API key, the per-profile rate limit
(creates only), then the Profile-Key header and the body. The URL's `ayr_ls_` token is kept only as a sha256 hash.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from flask import Blueprint, Response, current_app, jsonify, request

from emulator.api_common import (
    DEFAULT_LIFETIME_MINUTES,
    EmailRequest,
    allowed_social,
    bearer_api_key,
    client_connection,
    email_request,
    expires_in_minutes,
    held_answer,
    iso_time,
    keyed_answer,
    link_url,
    optional_bool,
    optional_string,
    rate_limit_profile,
    transport_fault,
)
from emulator.config import EmulatorConfig
from emulator.errors import (
    ACTION_LINK_SESSION,
    CODE_INVALID_API_KEY,
    CODE_LINK_SESSION_NOT_FOUND,
    MESSAGE_INVALID_API_KEY,
    MESSAGE_LINK_SESSION_NOT_FOUND,
    ApiError,
    bad_parameters,
    error_response,
)
from emulator.faults import LONG_EXPIRY_SECONDS, tampering_for
from emulator.knobs import SESSION_TOKEN_FAULTS
from emulator.state import EmulatorState, LinkSession, token_fingerprint

blueprint = Blueprint("link_sessions", __name__)

SESSIONS_PATH = "/api/profiles/link-sessions"
SESSION_TOKEN_PREFIX = "ayr_ls_"  # noqa: S105 - a public prefix, not a secret
# How long ago the "expired" fault's session expired (its JWT counterpart's `exp` is as far in the past).
EXPIRED_AGO_SECONDS = 60


@dataclass(frozen=True)
class SessionRequest:
    """A Link Session create that passed validation."""

    api_key: str
    profile_key: str
    title: str
    expires_in_minutes: int | float | None
    redirect: str | None
    allowed_social: tuple[str, ...]
    origin: str | None
    logout: bool
    email: EmailRequest | None


@blueprint.post(SESSIONS_PATH)
def create_link_session() -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    return held_answer(state, lambda answer_at: _create(config, state, answer_at))


@blueprint.get(f"{SESSIONS_PATH}/<session_id>")
def get_link_session(session_id: str) -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    state.record_link_session_read()
    return held_answer(state, lambda answer_at: _read(config, state, session_id, answer_at))


@blueprint.delete(f"{SESSIONS_PATH}/<session_id>")
def revoke_link_session(session_id: str) -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    state.record_link_session_revoke()
    return held_answer(state, lambda answer_at: _revoke(config, state, session_id, answer_at))


# --- create -------------------------------------------------------------------------------------------------
def _create(config: EmulatorConfig, state: EmulatorState, answer_at: float) -> Response:
    body = _request_body()
    profile_key = request.headers.get("Profile-Key")
    api_key = bearer_api_key()
    api_key_ok = api_key is not None and api_key in config.api_keys
    state.record_link_session_call(_log_entry(body, profile_key, api_key_ok), connection=client_connection())

    faulted = transport_fault(state, answer_at, ACTION_LINK_SESSION)
    if faulted is not None:
        return faulted

    return keyed_answer(
        state,
        ACTION_LINK_SESSION,
        rate_limit_profile(profile_key, api_key),
        api_key_ok,
        lambda: _success_payload(validate_request(body, profile_key, api_key, config, state), config, state, answer_at),
    )


def _request_body() -> object:
    # The body is optional: no body at all reads as `{}`, as the vendor's own examples allow.
    if not request.get_data(cache=True):
        return {}
    return request.get_json(silent=True)


def validate_request(
    body: object, profile_key: str | None, api_key: str, config: EmulatorConfig, state: EmulatorState
) -> SessionRequest:
    """Apply the documented header and body rules, raising ApiError on the first violation; `state` knows which
    profile keys were created or deleted at run time."""
    if not profile_key:
        raise bad_parameters("Missing the Profile-Key header: send the Profile Key of the User Profile.")
    if profile_key in config.api_keys:
        raise bad_parameters("The API Key cannot be used in the Profile-Key header. Send a User Profile Key.")
    title = state.profile_title(config, profile_key)
    if title is None:
        raise bad_parameters("Profile Key not found. Verify the Profile-Key header of the User Profile.")
    if not isinstance(body, dict):
        raise bad_parameters("The request body must be a JSON object.")
    # Fields the docs do not list are ignored, as the vendor does.
    return SessionRequest(
        api_key=api_key,
        profile_key=profile_key,
        title=title,
        expires_in_minutes=expires_in_minutes(body),
        redirect=optional_string(body, "redirect"),
        allowed_social=allowed_social(body),
        origin=optional_string(body, "origin"),
        logout=optional_bool(body, "logout"),
        email=email_request(body),
    )


def _success_payload(session_request: SessionRequest, config: EmulatorConfig, state: EmulatorState, now: float) -> dict:
    """The documented success body for a session created as of `now`, the moment the answer leaves."""
    minutes = session_request.expires_in_minutes or DEFAULT_LIFETIME_MINUTES
    # The knob shortens lifetimes for time-compressed simulations; off (None) it is the documented value.
    lifetime = state.knobs.token_lifetime_seconds or minutes * 60
    tampering = tampering_for(state.take_fault(SESSION_TOKEN_FAULTS))
    if tampering.long_expiry:
        lifetime = LONG_EXPIRY_SECONDS
    created_at = now - lifetime - EXPIRED_AGO_SECONDS if tampering.already_expired else now

    token = SESSION_TOKEN_PREFIX + secrets.token_urlsafe(32)  # 43 URL-safe characters after the prefix
    session = LinkSession(
        session_id=secrets.token_hex(32),
        token_hash=token_fingerprint(token),
        owner=token_fingerprint(session_request.api_key),
        profile_key=session_request.profile_key,
        created_at=created_at,
        expires_at=created_at + lifetime,
        redirect=session_request.redirect,
        allowed_social=session_request.allowed_social,
        origin=session_request.origin,
        logout=session_request.logout,
    )
    state.remember_session(session)

    url = build_session_url(config.link_base or request.host_url, token, config.domain)
    payload = {
        "status": "success",
        "sessionId": session.session_id,
        "url": build_session_url(tampering.link_base, token, config.domain) if tampering.link_base else url,
        "expiresAt": iso_time(session.expires_at),
        "emailSent": session_request.email is not None,
        "title": session_request.title,
    }
    if session_request.email is not None:
        # Nothing is mailed: the email is recorded (GET /_emulator/emails) with the URL it would carry.
        state.record_email(session_request.email.record(session_request.profile_key, url, now))
    if tampering.drop_field:
        payload.pop("sessionId" if tampering.drop_field == "token" else tampering.drop_field)
    return payload


def build_session_url(link_base: str, token: str, domain: str) -> str:
    """`<link-base>?session=ayr_ls_...&domain=<domain>`, the shape of the vendor's `url` field."""
    return link_url(link_base, {"session": token, "domain": domain})


def _log_entry(body: object, profile_key: str | None, api_key_ok: bool) -> dict:
    return {
        "endpoint": "link-sessions",
        "profileKey": profile_key,
        "options": dict(body) if isinstance(body, dict) else {},
        "api_key_ok": api_key_ok,
        "at": time.time(),
    }


# --- read and revoke ----------------------------------------------------------------------------------------
def _read(config: EmulatorConfig, state: EmulatorState, session_id: str, answer_at: float) -> Response:
    return _by_id(
        config, state, session_id, answer_at, state.link_session, lambda session: session_status(session, answer_at)
    )


def _revoke(config: EmulatorConfig, state: EmulatorState, session_id: str, answer_at: float) -> Response:
    # Idempotent: revoking a revoked (or expired) session answers the same success.
    return _by_id(
        config,
        state,
        session_id,
        answer_at,
        state.revoke_session,
        lambda _session: {"status": "success", "sessionId": session_id, "state": "revoked"},
    )


def _by_id(
    config: EmulatorConfig,
    state: EmulatorState,
    session_id: str,
    answer_at: float,
    find: Callable[[str, str], LinkSession | None],
    payload: Callable[[LinkSession], dict],
) -> Response:
    """Transport faults, the API key (403), then `find(session_id, owner)`'s session as `payload` or the 404."""
    faulted = transport_fault(state, answer_at, ACTION_LINK_SESSION)
    if faulted is not None:
        return faulted
    owner = _owner(config)
    if owner is None:
        return error_response(ApiError(403, CODE_INVALID_API_KEY, MESSAGE_INVALID_API_KEY), ACTION_LINK_SESSION)
    # The Profile-Key header is accepted and ignored: a session id names one session of the account.
    session = find(session_id, owner)
    if session is None:
        return _not_found()
    return jsonify(payload(session))


def session_status(session: LinkSession, now: float) -> dict:
    """The GET answer; firstUsedAt and lastUsedAt only once the URL has been opened."""
    status = {
        "status": "success",
        "sessionId": session.session_id,
        "state": session.state(now),
        "createdAt": iso_time(session.created_at),
        "expiresAt": iso_time(session.expires_at),
        "useCount": session.use_count,
    }
    if session.first_used_at is not None:
        status["firstUsedAt"] = iso_time(session.first_used_at)
    if session.last_used_at is not None:
        status["lastUsedAt"] = iso_time(session.last_used_at)
    return status


def _owner(config: EmulatorConfig) -> str | None:
    """The fingerprint of the caller's API key, or None when it is missing or not one of the account's."""
    api_key = bearer_api_key()
    if api_key is None or api_key not in config.api_keys:
        return None
    return token_fingerprint(api_key)


def _not_found() -> Response:
    # An unknown id and another API key's session get the same answer, so ids cannot be probed across keys.
    return error_response(
        ApiError(404, CODE_LINK_SESSION_NOT_FOUND, MESSAGE_LINK_SESSION_NOT_FOUND), ACTION_LINK_SESSION
    )
