"""Ayrshare's Profiles endpoints: `POST`/`DELETE /api/profiles`, `GET /api/user` and `DELETE /api/profiles/social`.

Written from the vendor's pages "Create a User Profile", "Delete a User Profile", "User Profile Details" and "Unlink
a Social Network" (ayrshare.com/docs/apis/...). The order of checks is generateJWT's: latency and transport faults,
then the API key, the per-profile rate limit, then the Profile-Key header and the body.
"""

from __future__ import annotations

import hashlib
import secrets
import string
from collections.abc import Callable

from flask import Blueprint, Response, current_app, request

from emulator.api_common import (
    bearer_api_key,
    held_answer,
    iso_time,
    profile_key_answer,
)
from emulator.config import EmulatorConfig
from emulator.errors import (
    ACTION_PROFILES,
    ACTION_USER,
    CODE_BAD_PARAMETERS,
    MESSAGE_DUPLICATE_TITLE,
    MESSAGE_PROFILE_KEY_NOT_FOUND,
    ApiError,
    bad_parameters,
)
from emulator.knobs import PROFILE_FAULTS
from emulator.state import PRIMARY_PROFILE, PRIMARY_PROFILE_TITLE, EmulatorState, UserProfile, default_ref_id

blueprint = Blueprint("profiles_api", __name__)

PROFILES_PATH = "/api/profiles"
# The networks of `disableSocial` on "Create a User Profile"; the linking page offers these.
NETWORKS = (
    "bluesky",
    "facebook",
    "gmb",
    "instagram",
    "linkedin",
    "pinterest",
    "reddit",
    "snapchat",
    "telegram",
    "threads",
    "tiktok",
    "twitter",
    "youtube",
)
# "Unlink a Social Network" lists fewer: pinterest and snapchat are not among the platforms it allows.
UNLINKABLE_NETWORKS = tuple(network for network in NETWORKS if network not in ("pinterest", "snapchat"))
# Optional create fields and their JSON types (vendor page); fields it does not list are ignored.
BOOLEAN_FIELDS = ("messagingActive", "hideTopHeader", "team")
STRING_FIELDS = ("topHeader", "subHeader", "email")
STRING_ARRAY_FIELDS = ("disableSocial", "tags")
# Real profile keys are four dash-separated groups of seven upper-case letters and digits.
PROFILE_KEY_GROUPS, PROFILE_KEY_GROUP_LENGTH = 4, 7
_KEY_ALPHABET = string.ascii_uppercase + string.digits


@blueprint.post(PROFILES_PATH)
def create_profile() -> Response:
    return _endpoint("profile_creates", ACTION_PROFILES, _create, profile_scoped=False)


@blueprint.delete(PROFILES_PATH)
def delete_profile() -> Response:
    return _endpoint("profile_deletes", ACTION_PROFILES, _delete)


@blueprint.get("/api/user")
def user_details() -> Response:
    return _endpoint("user_reads", ACTION_USER, _user)


@blueprint.delete(f"{PROFILES_PATH}/social")
def unlink_social() -> Response:
    return _endpoint("social_unlinks", ACTION_PROFILES, _unlink)


Handler = Callable[[EmulatorConfig, EmulatorState, str | None, float], dict]


def _endpoint(counter: str, action: str, handler: Handler, profile_scoped: bool = True) -> Response:
    """Count the call, hold the answer for the latency knob and run the checks every Profiles endpoint shares."""
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    state.record_profile_call(counter)
    # A create works on the account itself, so it is not profile-scoped: it counts against the Primary Profile.
    return held_answer(
        state,
        lambda answer_at: profile_key_answer(
            config,
            state,
            action,
            answer_at,
            lambda profile_key, _api_key: handler(config, state, profile_key, answer_at),
            profile_scoped,
        ),
    )


def _body(required: bool) -> dict:
    # DELETE requests in the vendor's examples may carry no body at all; that reads as `{}`.
    if not request.get_data(cache=True) and not required:
        return {}
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_parameters("The request body must be a JSON object.")
    return body


def _live_profile(config: EmulatorConfig, state: EmulatorState, profile_key: str) -> UserProfile:
    profile = state.profile(config, profile_key)
    if profile is None:
        raise bad_parameters(MESSAGE_PROFILE_KEY_NOT_FOUND)
    return profile


# --- create -------------------------------------------------------------------------------------------------
def _create(config: EmulatorConfig, state: EmulatorState, _profile_key: str | None, now: float) -> dict:
    body = _body(required=True)
    title = body.get("title")
    if title is None or title == "":
        raise bad_parameters("Missing required parameter: title.")
    if not isinstance(title, str):
        raise bad_parameters("title must be a string.")
    _check_optional_fields(body)
    disabled = tuple(body.get("disableSocial") or ())
    if body.get("team") is True and not body.get("email"):
        raise bad_parameters("A team member profile needs the email of the person to invite.")

    profile = UserProfile(
        profile_key=new_profile_key(),
        title=title,
        ref_id=secrets.token_hex(20),  # 40 hex digits, as in the vendor's samples
        created_at=now,
        created_at_run_time=True,
        disabled_social=disabled,
        email=body.get("email") or None,
    )
    if not state.create_profile(config, profile):
        raise ApiError(400, CODE_BAD_PARAMETERS, MESSAGE_DUPLICATE_TITLE)
    payload = {"status": "success", "title": title, "refId": profile.ref_id, "profileKey": profile.profile_key}
    if state.take_fault(PROFILE_FAULTS) == "missing_profile_key":
        payload.pop("profileKey")
    return payload


def _check_optional_fields(body: dict) -> None:
    for name in BOOLEAN_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise bad_parameters(f"{name} must be a boolean.")
    for name in STRING_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_parameters(f"{name} must be a string.")
    for name in STRING_ARRAY_FIELDS:
        value = body.get(name)
        if value is not None and not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
            raise bad_parameters(f"{name} must be an array of strings.")
    unknown = set(body.get("disableSocial") or ()) - set(NETWORKS)
    if unknown:
        raise bad_parameters(f"disableSocial accepts only: {', '.join(NETWORKS)}.")


def new_profile_key() -> str:
    """A random key in the shape of the vendor's: `XXXXXXX-XXXXXXX-XXXXXXX-XXXXXXX`."""
    return "-".join(
        "".join(secrets.choice(_KEY_ALPHABET) for _ in range(PROFILE_KEY_GROUP_LENGTH))
        for _ in range(PROFILE_KEY_GROUPS)
    )


# --- delete -------------------------------------------------------------------------------------------------
def _delete(config: EmulatorConfig, state: EmulatorState, profile_key: str | None, _now: float) -> dict:
    if profile_key is None:
        # The vendor's page: `title` (case-sensitive) names the profile when no Profile-Key is sent.
        title = _body(required=False).get("title")
        if not isinstance(title, str) or not title:
            raise bad_parameters("Send the Profile-Key header (or the title) of the User Profile to delete.")
        found = state.profile_by_title(config, title)
        if found is None:
            raise bad_parameters("No User Profile has this title.")
        profile_key = found.profile_key
    deleted = state.delete_profile(config, profile_key)
    if deleted is None:
        raise bad_parameters(MESSAGE_PROFILE_KEY_NOT_FOUND)
    return {"status": "success", "refId": deleted.ref_id}


# --- user details -------------------------------------------------------------------------------------------
def _user(config: EmulatorConfig, state: EmulatorState, profile_key: str | None, _now: float) -> dict:
    if profile_key is None:
        # Without a Profile-Key the answer is the Primary Profile's own.
        api_key = bearer_api_key() or ""
        title, ref_id, created_at, email, owner = (
            PRIMARY_PROFILE_TITLE,
            default_ref_id(api_key),
            state.started_at,
            config.account_email,
            PRIMARY_PROFILE,
        )
    else:
        profile = _live_profile(config, state, profile_key)
        title, ref_id, created_at, email, owner = (
            profile.title,
            profile.ref_id,
            profile.created_at,
            profile.email,
            profile_key,
        )
    accounts = state.linked_accounts(owner)
    details: dict = {}
    # The vendor's page: "If no social accounts are linked, activeSocialAccounts will not be returned."
    if accounts:
        details["activeSocialAccounts"] = sorted(entry["platform"] for entry in accounts)
    details["created"] = _firestore_time(created_at)
    details["displayNames"] = sorted(accounts, key=lambda entry: entry["platform"])
    if email:
        details["email"] = email
    details["refId"] = ref_id
    details["title"] = title
    return details


def _firestore_time(moment: float) -> dict:
    """`created` as the vendor's sample shows it: seconds, nanoseconds and an ISO time without fractions."""
    seconds = int(moment)
    return {
        "_seconds": seconds,
        "_nanoseconds": int((moment - seconds) * 1_000_000) * 1000,
        "utc": iso_time(seconds).replace(".000Z", "Z"),
    }


def linked_entry(title: str, network: str, now: float) -> dict:
    """The `displayNames` entry of a network the person just linked on the linking page (made-up account data)."""
    username = f"{hashlib.sha256(f'{title}:{network}'.encode()).hexdigest()[:10]}"
    return {
        "created": iso_time(now),
        "displayName": f"{title} ({network})",
        "id": str(secrets.randbelow(10**15)),
        "platform": network,
        "profileUrl": f"https://example.com/{network}/{username}",
        "userImage": f"https://example.com/{network}/{username}.jpg",
        "username": username,
    }


# --- unlink -------------------------------------------------------------------------------------------------
def _unlink(config: EmulatorConfig, state: EmulatorState, profile_key: str | None, _now: float) -> dict:
    if profile_key is None:
        # The vendor's page: without a Profile-Key the Primary Profile's own account is unlinked.
        owner, ref_id = PRIMARY_PROFILE, default_ref_id(bearer_api_key() or "")
    else:
        owner, ref_id = profile_key, _live_profile(config, state, profile_key).ref_id
    platform = _body(required=True).get("platform")
    if platform is None or platform == "":
        raise bad_parameters("Missing required parameter: platform.")
    if platform not in UNLINKABLE_NETWORKS:
        raise bad_parameters(f"platform must be one of: {', '.join(UNLINKABLE_NETWORKS)}.")
    # The vendor's page: "A successful 200 response will be returned even if the platform is not linked."
    state.unlink_account(owner, platform)
    return {"status": "success", "platform": platform, "refId": ref_id}
