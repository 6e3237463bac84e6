"""`POST /api/profiles/generateJWT`, following the vendor's "Generate a JWT" page.

Order of checks: latency and transport faults (an upstream outage does not care about the request), then
the API key, the per-profile rate limit, then the body. Token faults tamper only with would-be successes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
from flask import Blueprint, Response, current_app, request

from emulator.api_common import (
    DEFAULT_LIFETIME_MINUTES,
    EmailRequest,
    allowed_social,
    bearer_api_key,
    client_connection,
    email_request,
    expires_in_minutes,
    held_answer,
    keyed_answer,
    link_url,
    optional_string,
    rate_limit_profile,
    transport_fault,
)
from emulator.config import EmulatorConfig
from emulator.errors import (
    ACTION,
    CODE_DUPLICATE_TWITTER_CREDENTIALS,
    CODE_JWT_GENERATION,
    CODE_PARTIAL_TWITTER_KEYS,
    MESSAGE_DUPLICATE_TWITTER_CREDENTIALS,
    MESSAGE_PARTIAL_TWITTER_KEYS,
    MESSAGE_PRIVATE_KEY_UNPARSEABLE,
    ApiError,
    bad_parameters,
)
from emulator.faults import LONG_EXPIRY_SECONDS, tampering_for
from emulator.keys import PrivateKeyError, foreign_private_key, key_matches, mint_token, parse_private_key
from emulator.knobs import TOKEN_FAULTS
from emulator.state import EmulatorState, LinkOptions

blueprint = Blueprint("jwt_api", __name__)

REQUIRED_FIELDS = ("domain", "privateKey", "profileKey")
TWITTER_HEADERS = ("X-Twitter-OAuth1-Api-Key", "X-Twitter-OAuth1-Api-Secret")
TWITTER_BODY_FIELDS = ("twitterApiKey", "twitterApiSecret")


@dataclass(frozen=True)
class JwtRequest:
    """A generateJWT body that passed validation."""

    api_key: str
    domain: str
    profile_key: str
    title: str
    private_key: RSAPrivateKey
    expires_in_minutes: int | float | None
    redirect: str | None
    allowed_social: tuple[str, ...]
    email: EmailRequest | None


@blueprint.post("/api/profiles/generateJWT")
def generate_jwt() -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    return held_answer(state, lambda answer_at: _answer(config, state, answer_at))


def _answer(config: EmulatorConfig, state: EmulatorState, answer_at: float) -> Response:
    body = request.get_json(silent=True)
    api_key = bearer_api_key()
    api_key_ok = api_key is not None and api_key in config.api_keys
    state.record_generate_call(_log_entry(body, api_key_ok, config), connection=client_connection())

    faulted = transport_fault(state, answer_at, ACTION)
    if faulted is not None:
        return faulted

    rate_profile = rate_limit_profile(body.get("profileKey") if isinstance(body, dict) else None, api_key)
    return keyed_answer(
        state,
        ACTION,
        rate_profile,
        api_key_ok,
        lambda: _success_payload(validate_body(body, api_key, config, state), config, state, int(answer_at)),
    )


def validate_body(body: object, api_key: str, config: EmulatorConfig, state: EmulatorState) -> JwtRequest:
    """Apply the documented body rules, raising ApiError on the first violation; `state` knows which profile keys
    were created or deleted at run time."""
    if not isinstance(body, dict):
        raise bad_parameters("The request body must be a JSON object with domain, privateKey and profileKey.")
    missing = [name for name in REQUIRED_FIELDS if body.get(name) in (None, "")]
    if missing:
        raise bad_parameters(f"Missing required parameter(s): {', '.join(missing)}.")
    for name in REQUIRED_FIELDS:
        if not isinstance(body[name], str):
            raise bad_parameters(f"{name} must be a string.")
    _check_twitter_credentials(body)

    if body["domain"] != config.domain:
        raise bad_parameters("Domain not found. Use the exact domain given during onboarding.")
    profile_key = body["profileKey"]
    if profile_key in config.api_keys:
        raise bad_parameters("The API Key cannot be used in the profileKey field. Send a User Profile Key.")
    title = state.profile_title(config, profile_key)
    if title is None:
        raise bad_parameters("Profile Key not found. Verify the profileKey of the User Profile.")

    expires_in = expires_in_minutes(body)
    redirect = optional_string(body, "redirect")
    networks = allowed_social(body)
    email = email_request(body)

    try:
        # Only a literal `true` switches base64 on, as a JSON boolean flag should.
        private_key = parse_private_key(body["privateKey"], body.get("base64") is True)
    except PrivateKeyError as exc:
        raise ApiError(400, CODE_JWT_GENERATION, MESSAGE_PRIVATE_KEY_UNPARSEABLE) from exc
    if body.get("verify") is True and not key_matches(private_key, config.public_key):
        # Undocumented code: the vendor only says `verify` returns an error instead of a URL; 189 is its
        # "could not generate a usable JWT" family.
        raise ApiError(
            400,
            CODE_JWT_GENERATION,
            "Error generating JWT. The generated token could not be verified with the public key registered "
            "for this domain. Check that privateKey is the key pair registered during onboarding.",
        )

    return JwtRequest(
        api_key=api_key,
        domain=body["domain"],
        profile_key=profile_key,
        title=title,
        private_key=private_key,
        expires_in_minutes=expires_in,
        redirect=redirect,
        allowed_social=networks,
        email=email,
    )


def _success_payload(jwt_request: JwtRequest, config: EmulatorConfig, state: EmulatorState, now: int) -> dict:
    """The documented success body; the token is minted as of `now`, the moment the answer leaves."""
    knobs = state.knobs
    minutes = jwt_request.expires_in_minutes or DEFAULT_LIFETIME_MINUTES
    # The knob shortens lifetimes for time-compressed simulations; off (None) it is the documented value.
    lifetime = knobs.token_lifetime_seconds or int(minutes * 60)
    tampering = tampering_for(state.take_fault(TOKEN_FAULTS))
    if tampering.long_expiry:
        lifetime = LONG_EXPIRY_SECONDS
    issued_at = now - lifetime - 60 if tampering.already_expired else now
    token = mint_token(
        foreign_private_key() if tampering.use_foreign_key else jwt_request.private_key,
        api_key=jwt_request.api_key,
        profile_key=jwt_request.profile_key,
        domain=jwt_request.domain,
        subject=config.account_email,
        lifetime_seconds=lifetime,
        issued_at=issued_at,
    )
    link_base = config.link_base or request.host_url
    url = build_link_url(link_base, jwt_request.domain, token)
    payload = {
        "status": "success",
        "title": jwt_request.title,
        "token": token,
        "url": build_link_url(tampering.link_base, jwt_request.domain, token) if tampering.link_base else url,
    }
    if jwt_request.email is not None:
        # Nothing is mailed: the email is recorded (GET /_emulator/emails) with the URL it would carry.
        state.record_email(jwt_request.email.record(jwt_request.profile_key, url, now))
        payload["emailSent"] = True
    if jwt_request.expires_in_minutes is not None:
        payload["expiresIn"] = f"{jwt_request.expires_in_minutes:g}m"
    if tampering.drop_field:
        payload.pop(tampering.drop_field)

    if jwt_request.redirect or jwt_request.allowed_social:
        # The vendor shortens the redirect into the URL; the emulator keeps it server-side instead so the
        # raw redirect never appears in the link, and the page looks it up by token.
        state.remember_link(token, LinkOptions(jwt_request.redirect, jwt_request.allowed_social, issued_at + lifetime))
    return payload


def build_link_url(link_base: str, domain: str, token: str) -> str:
    """`<link-base>?domain=<domain>&jwt=<token>`, the shape of the vendor's `url` field."""
    return link_url(link_base, {"domain": domain, "jwt": token})


def _present(value: object) -> bool:
    return value is not None and value != ""


def _check_twitter_credentials(body: dict) -> None:
    header_pair = [request.headers.get(name) for name in TWITTER_HEADERS]
    body_pair = [body.get(name) for name in TWITTER_BODY_FIELDS]
    in_headers = any(_present(value) for value in header_pair)
    in_body = any(_present(value) for value in body_pair)
    if in_headers and in_body:
        raise ApiError(400, CODE_DUPLICATE_TWITTER_CREDENTIALS, MESSAGE_DUPLICATE_TWITTER_CREDENTIALS)
    for pair in (header_pair, body_pair):
        if any(_present(value) for value in pair) and not all(_present(value) for value in pair):
            raise ApiError(400, CODE_PARTIAL_TWITTER_KEYS, MESSAGE_PARTIAL_TWITTER_KEYS)


def _log_entry(body: object, api_key_ok: bool, config: EmulatorConfig) -> dict:
    fields = body if isinstance(body, dict) else {}
    return {
        "endpoint": "generateJWT",
        "profileKey": fields.get("profileKey"),
        "domain": fields.get("domain"),
        "options": {k: v for k, v in fields.items() if k not in REQUIRED_FIELDS},
        "private_key_matches": _private_key_matches(fields, config),
        "twitter_headers": any(_present(request.headers.get(name)) for name in TWITTER_HEADERS),
        "api_key_ok": api_key_ok,
        "at": time.time(),
    }


def _private_key_matches(fields: dict, config: EmulatorConfig) -> bool:
    text = fields.get("privateKey")
    if not isinstance(text, str) or not text:
        return False
    try:
        return key_matches(parse_private_key(text, fields.get("base64") is True), config.public_key)
    except PrivateKeyError:
        return False
