"""Ayrshare's webhooks: register, unregister and list (`/api/hook/webhook`), rotate a profile's signing secret
(`POST /api/hook/webhook/secret`), and signed, retried `social` deliveries when a person links or unlinks a network.

Written from the vendor's pages "Webhooks Overview" (answer 2xx within 10 s or a 503 is recorded; two retries, after
5 s and 30 s; a User Profile's own hook wins over the Primary Profile's), "Register Webhook" (`action`, an https
`url`, `secret` "used for HMAC"; answer `{status, action, url, refId}`), "Webhook Security" (HMAC-SHA256 of the POST
body keyed by the secret in `X-Authorization-Content-SHA256`, Unix seconds in `X-Authorization-Timestamp`), "Rotate
Signing Secret" (one secret per profile for all its actions; 24 h during which deliveries are signed with both the
previous and the new secret) and "Webhook Actions" (`social`). Where they are silent the emulator's choice is marked.

The knob `webhook_fault` (emulator/knobs.py) makes deliveries misbehave on demand: "duplicate" sends the delivery's
body once more after the delivery ends, "stale_timestamp" dates every attempt an hour back, "bad_signature" signs
every attempt with a secret nobody knows. Each armed count is one delivery (an event), with all its retries.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests
from flask import Blueprint, Response, current_app, jsonify, request

from emulator.api_common import (
    held_answer,
    iso_time,
    profile_key_answer,
)
from emulator.config import EmulatorConfig
from emulator.errors import (
    MESSAGE_PROFILE_KEY_NOT_FOUND,
    bad_parameters,
)
from emulator.profiles_api import NETWORKS
from emulator.state import PRIMARY_PROFILE, PRIMARY_PROFILE_TITLE, EmulatorState, default_ref_id

blueprint = Blueprint("webhooks", __name__)
control_blueprint = Blueprint("webhooks_control", __name__, url_prefix="/_emulator/webhooks")

HOOK_PATH = "/api/hook/webhook"
# The action of the vendor's rotate answer; the emulator's choice for every webhook error body too (undocumented).
ACTION_WEBHOOK = "webhook"
# "Register Webhook" and Ayrshare's own MCP tooling list these actions; only `social` is ever delivered here.
ACTIONS = (
    "feed",
    "social",
    "scheduled",
    "batch",
    "messages",
    "mentions",
    "comments",
    "automations",
    "accountActivity",
)
SOCIAL_TYPES = ("link", "unlink", "refresh")
SOURCES = ("user", "system")
TIMESTAMP_HEADER = "X-Authorization-Timestamp"
SIGNATURE_HEADER = "X-Authorization-Content-SHA256"
# Emulator's choice (the docs say "signed with both" but not how): during a rotation's grace window the documented
# header keeps the previous secret's signature, so a receiver not yet updated drops nothing, and this one carries the
# new secret's. Third-party notes on the vendor's overview name this header; the vendor's pages read here do not.
NEW_SIGNATURE_HEADER = "X-Authorization-Content-SHA256-V2"
# Emulator-only allowance: Ayrshare refuses any URL that is not https; plain http to loopback lets tests run a local
# receiver without TLS.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost")
DEFAULT_GRACE_SECONDS = 24 * 3600
# How long a `refresh` event gives the person by default (emulator's choice: the docs name `refreshBy`, no period).
DEFAULT_REFRESH_DAYS = 7
MAX_RECORDED_ATTEMPTS = 1_000
# How far back a "stale_timestamp" delivery is dated: well outside any sensible tolerance (the vendor names none).
STALE_TIMESTAMP_SECONDS = 3600
COUNTERS = (
    "webhook_registers",
    "webhook_unregisters",
    "webhook_lists",
    "webhook_secret_rotations",
    "webhook_events",
    "webhook_attempts",
    "webhook_failed_attempts",
    "webhook_faults_served",
)


def sign(secret: str, body: bytes) -> str:
    """The `X-Authorization-Content-SHA256` value: HMAC-SHA256 of the raw body, lower-case hex (hex is the
    emulator's choice; the docs do not say how the digest is encoded)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class Owner:
    """Whose webhooks a request manages: a User Profile (its key) or the Primary Profile (PRIMARY_PROFILE)."""

    key: str
    ref_id: str
    title: str


@dataclass(frozen=True)
class Registration:
    action: str
    url: str
    created_at: float
    owner: Owner


@dataclass(frozen=True)
class SigningSecret:
    """A profile's signing secret and, for a grace window after a rotation, the one it replaced."""

    current: str
    previous: str | None = None
    previous_until: float = 0.0

    def signing(self, now: float) -> tuple[str, str | None]:
        """(secret for the documented header, secret for the new-secret header or None outside a grace window)."""
        if self.previous is not None and now < self.previous_until:
            return self.previous, self.current
        return self.current, None


class WebhookStore:
    """Registrations, signing secrets, delivery attempts and counters; one lock, nothing slow while it is held."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = 0
        self._clear()

    def _clear(self) -> None:
        self._registrations: dict[str, dict[str, Registration]] = {}  # owner key -> action -> registration
        self._secrets: dict[str, SigningSecret] = {}  # owner key -> secret
        self._attempts: deque[dict] = deque(maxlen=MAX_RECORDED_ATTEMPTS)
        self._counters = dict.fromkeys(COUNTERS, 0)

    def reset(self) -> None:
        """Forget everything; deliveries still retrying stop before their next attempt."""
        with self._lock:
            self._generation += 1
            self._clear()

    @property
    def generation(self) -> int:
        with self._lock:
            return self._generation

    def count(self, counter: str) -> None:
        with self._lock:
            self._counters[counter] += 1

    def stats(self) -> dict:
        with self._lock:
            return dict(self._counters)

    def register(self, registration: Registration, secret: str | None) -> None:
        """Add or replace the owner's hook for one action; a secret given here becomes the profile's at once."""
        key = registration.owner.key
        with self._lock:
            self._registrations.setdefault(key, {})[registration.action] = registration
            if secret is not None and self._secrets.get(key, SigningSecret("")).current != secret:
                self._secrets[key] = SigningSecret(secret)

    def unregister(self, owner_key: str, action: str) -> bool:
        with self._lock:
            return self._registrations.get(owner_key, {}).pop(action, None) is not None

    def registrations(self, owner_key: str) -> list[Registration]:
        with self._lock:
            return list(self._registrations.get(owner_key, {}).values())

    def rotate(self, owner_key: str, secret: str, now: float, grace_seconds: int) -> None:
        """Set (first time) or rotate the profile's secret; a rotation keeps the old one signing for the grace window.

        Emulator's choice: a rotation inside a grace window is accepted (the dashboard disables its button then; the
        API page says nothing) and the secret being replaced becomes the previous one.
        """
        with self._lock:
            old = self._secrets.get(owner_key)
            if old is None or grace_seconds == 0 or old.current == secret:
                self._secrets[owner_key] = SigningSecret(secret)
            else:
                self._secrets[owner_key] = SigningSecret(secret, old.current, now + grace_seconds)

    def target(self, owner_key: str, action: str) -> Registration | None:
        """The hook an event of `owner_key` goes to: its own, else the Primary Profile's."""
        with self._lock:
            own = self._registrations.get(owner_key, {}).get(action)
            return own or self._registrations.get(PRIMARY_PROFILE, {}).get(action)

    def signing(self, owner_key: str, now: float) -> tuple[str | None, str | None]:
        with self._lock:
            secret = self._secrets.get(owner_key)
        return secret.signing(now) if secret is not None else (None, None)

    def record_attempt(self, generation: int, entry: dict) -> bool:
        """Record one attempt unless a reset happened since the delivery began (then the caller stops)."""
        with self._lock:
            if generation != self._generation:
                return False
            self._attempts.append(entry)
            self._counters["webhook_attempts"] += 1
            if not entry["ok"]:
                self._counters["webhook_failed_attempts"] += 1
            return True

    def snapshot(self, now: float) -> dict:
        """What `GET /_emulator/webhooks` shows: registrations (no keys, no secrets) and attempts, oldest first."""
        with self._lock:
            registrations = []
            for key, by_action in self._registrations.items():
                secret = self._secrets.get(key)
                for registration in by_action.values():
                    in_grace = secret is not None and secret.previous is not None and now < secret.previous_until
                    registrations.append(
                        {
                            "profile": "primary" if key == PRIMARY_PROFILE else "user",
                            "refId": registration.owner.ref_id,
                            "title": registration.owner.title,
                            "action": registration.action,
                            "url": registration.url,
                            "created": iso_time(registration.created_at),
                            "secretSet": secret is not None,
                            "dualSigningUntil": iso_time(secret.previous_until) if in_grace else None,
                        }
                    )
            return {"registrations": registrations, "attempts": copy.deepcopy(list(self._attempts))}


def _store() -> WebhookStore:
    return current_app.config["EMULATOR_WEBHOOKS"]


# --- delivery -----------------------------------------------------------------------------------------------
def social_event(
    kind: str,
    platform: str,
    ref_id: str,
    title: str | None,
    *,
    source: str = "user",
    display_name: str | None = None,
    refresh_by: str | None = None,
    details: object = None,
) -> dict:
    """A `social` event body in the fields "Webhook Actions" names; fields without a value are left out."""
    event = {
        "action": "social",
        "type": kind,
        "platform": platform,
        "refId": ref_id,
        "title": title,
        "displayName": display_name,
        "source": source,
        "refreshBy": refresh_by,
        "details": details,
    }
    return {name: value for name, value in event.items() if value is not None}


def dispatch(owner_key: str, event: dict) -> dict | None:
    """Send `event` in a background thread to the hook for its action; None when no hook is registered."""
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    store = _store()
    registration = store.target(owner_key, event["action"])
    if registration is None:
        return None
    fault = state.take_webhook_fault()
    if fault is not None:
        store.count("webhook_faults_served")
    knobs = state.knobs
    delays = (
        tuple(delay / 1000 for delay in knobs.webhook_retry_delays_ms)
        if knobs.webhook_retry_delays_ms is not None
        else config.webhook_retry_delays
    )
    timeout = knobs.webhook_timeout_ms / 1000 if knobs.webhook_timeout_ms is not None else config.webhook_timeout
    delivery = _Delivery(
        store=store,
        generation=store.generation,
        registration=registration,
        # Compact, as JSON.stringify writes it; the signature covers exactly these bytes.
        body=json.dumps(event, separators=(",", ":")).encode("utf-8"),
        event=event,
        delivery_id=secrets.token_hex(10),
        delays=delays,
        timeout=timeout,
        fault=fault,
    )
    store.count("webhook_events")
    # A thread (a greenlet under `python -m emulator`): the request that caused the event must not wait for it.
    threading.Thread(target=delivery.run, name=f"webhook-{delivery.delivery_id}", daemon=True).start()
    return {"deliveryId": delivery.delivery_id, "url": registration.url}


@dataclass(frozen=True)
class _Delivery:
    store: WebhookStore
    generation: int
    registration: Registration
    body: bytes
    event: dict
    delivery_id: str
    delays: tuple[float, ...]
    timeout: float
    fault: str | None = None  # knob `webhook_fault`, consumed for this delivery

    def run(self) -> None:
        attempt = 0
        for delay in (0.0, *self.delays):
            time.sleep(delay)
            attempt += 1
            ok = self._attempt_and_record(attempt, self.fault if self.fault != "duplicate" else None)
            if ok is None:
                return  # reset since the delivery began
            if ok:
                break
        if self.fault == "duplicate":
            # Emulator's choice: the same body once more when the delivery is over (as a sender that lost the
            # receiver's answer would), with a fresh timestamp and signature, like any retry.
            self._attempt_and_record(attempt + 1, "duplicate")

    def _attempt_and_record(self, attempt: int, fault: str | None) -> bool | None:
        """One attempt: whether it succeeded, or None when a reset stopped the delivery."""
        if self.store.generation != self.generation:
            return None
        status, error = self._attempt(fault)
        ok = error is None and status is not None and 200 <= status < 300
        entry = {
            "deliveryId": self.delivery_id,
            "attempt": attempt,
            "action": self.event["action"],
            "type": self.event.get("type"),
            "platform": self.event.get("platform"),
            "refId": self.event.get("refId"),
            "url": self.registration.url,
            "statusCode": status,
            "error": error,
            "ok": ok,
            "fault": fault,
            "at": iso_time(time.time()),
        }
        if not self.store.record_attempt(self.generation, entry):
            return None
        return ok

    def _attempt(self, fault: str | None = None) -> tuple[int | None, str | None]:
        now = time.time()
        headers = {"Content-Type": "application/json"}
        # Signing uses the secret of the profile whose hook this is (a User Profile falling back to the Primary
        # Profile's hook gets the Primary Profile's signature), read per attempt so a rotation applies to retries.
        secret, new_secret = self.store.signing(self.registration.owner.key, now)
        if fault == "bad_signature":
            # A secret nobody knows, for both headers; an unsigned hook gets a signature too (emulator's choice).
            secret = secrets.token_hex(16)
            new_secret = secrets.token_hex(16) if new_secret is not None else None
        stamp = now - STALE_TIMESTAMP_SECONDS if fault == "stale_timestamp" else now
        if secret is not None or fault == "stale_timestamp":
            headers[TIMESTAMP_HEADER] = str(int(stamp))
        if secret is not None:
            headers[SIGNATURE_HEADER] = sign(secret, self.body)
        if new_secret is not None:
            headers[NEW_SIGNATURE_HEADER] = sign(new_secret, self.body)
        try:
            # No redirects: the docs require the final URL, so a 3xx is a failed delivery.
            response = requests.post(
                self.registration.url, data=self.body, headers=headers, timeout=self.timeout, allow_redirects=False
            )
        except requests.Timeout:
            return 503, "timeout"  # the overview: "a 503 response will be recorded"
        except requests.RequestException as exc:
            return None, type(exc).__name__
        response.close()
        return response.status_code, None


def notify_linking_page(profile_key: str, kind: str, platform: str, display_name: str | None) -> None:
    """The linking page's Link or Unlink button changed a profile's accounts: tell its `social` hook, if any."""
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    profile = state.profile(config, profile_key)
    if profile is None:
        return
    event = social_event(kind, platform, profile.ref_id, profile.title, display_name=display_name)
    dispatch(profile_key, event)


# --- API endpoints ------------------------------------------------------------------------------------------
@blueprint.post(HOOK_PATH)
def register_webhook() -> Response:
    return _endpoint("webhook_registers", _register)


@blueprint.delete(HOOK_PATH)
def unregister_webhook() -> Response:
    return _endpoint("webhook_unregisters", _unregister)


@blueprint.get(HOOK_PATH)
def list_webhooks() -> Response:
    return _endpoint("webhook_lists", _list)


@blueprint.post(f"{HOOK_PATH}/secret")
def rotate_signing_secret() -> Response:
    return _endpoint("webhook_secret_rotations", _rotate)


Handler = Callable[[EmulatorState, WebhookStore, Owner, float], dict]


def _endpoint(counter: str, handler: Handler) -> Response:
    """Count the call, hold it for the latency knob and check it in the Profiles endpoints' order."""
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    store = _store()
    store.count(counter)
    return held_answer(state, lambda answer_at: _answer(state, store, handler, answer_at))


def _answer(state: EmulatorState, store: WebhookStore, handler: Handler, answer_at: float) -> Response:
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    return profile_key_answer(
        config,
        state,
        ACTION_WEBHOOK,
        answer_at,
        lambda profile_key, api_key: handler(state, store, _owner(config, state, profile_key, api_key), answer_at),
    )


def _owner(config: EmulatorConfig, state: EmulatorState, profile_key: str | None, api_key: str) -> Owner:
    if profile_key is None:
        return Owner(PRIMARY_PROFILE, default_ref_id(api_key), PRIMARY_PROFILE_TITLE)
    profile = state.profile(config, profile_key)
    if profile is None:
        raise bad_parameters(MESSAGE_PROFILE_KEY_NOT_FOUND)
    return Owner(profile_key, profile.ref_id, profile.title)


def _body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise bad_parameters("The request body must be a JSON object.")
    return body


def _action(body: dict) -> str:
    action = body.get("action")
    if action is None or action == "":
        raise bad_parameters("Missing required parameter: action.")
    if action not in ACTIONS:
        raise bad_parameters(f"action must be one of: {', '.join(ACTIONS)}.")
    return action


def _check_url(url: object) -> str:
    if url is None or url == "":
        raise bad_parameters("Missing required parameter: url.")
    if not isinstance(url, str) or not _acceptable_url(url):
        raise bad_parameters("url must be a valid URL that begins with https://.")
    return url


def _acceptable_url(url: str) -> bool:
    if any(character.isspace() for character in url):
        return False
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    if not parts.hostname:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK_HOSTS)


def _register(_state: EmulatorState, store: WebhookStore, owner: Owner, now: float) -> dict:
    body = _body()
    action = _action(body)
    url = _check_url(body.get("url"))
    secret = body.get("secret")
    if secret == "":
        secret = None
    if secret is not None and not isinstance(secret, str):
        raise bad_parameters("secret must be a string.")
    store.register(Registration(action, url, now, owner), secret)
    return {"status": "success", "action": action, "url": url, "refId": owner.ref_id}


def _unregister(_state: EmulatorState, store: WebhookStore, owner: Owner, _now: float) -> dict:
    action = _action(_body())
    # Emulator's choice (undocumented): unregistering an action that has no hook is refused, not a silent success.
    if not store.unregister(owner.key, action):
        raise bad_parameters("No webhook is registered for this action.")
    return {"status": "success", "action": action, "refId": owner.ref_id}


def _list(_state: EmulatorState, store: WebhookStore, owner: Owner, _now: float) -> dict:
    # Emulator's choice: "List Registered Webhooks" exists in the docs, its answer's shape was not found.
    return {
        "status": "success",
        "refId": owner.ref_id,
        "webhooks": [
            {"action": hook.action, "url": hook.url, "created": iso_time(hook.created_at)}
            for hook in store.registrations(owner.key)
        ],
    }


def _rotate(state: EmulatorState, store: WebhookStore, owner: Owner, now: float) -> dict:
    secret = _body().get("secret")
    if not isinstance(secret, str) or not secret:
        raise bad_parameters("Missing required parameter: secret.")
    grace = state.knobs.webhook_grace_seconds
    store.rotate(owner.key, secret, now, DEFAULT_GRACE_SECONDS if grace is None else grace)
    return {"status": "success", "action": ACTION_WEBHOOK, "refId": owner.ref_id}


# --- control endpoints --------------------------------------------------------------------------------------
@control_blueprint.get("")
def webhooks_snapshot() -> Response:
    """Registrations (never secrets or profile keys) and every delivery attempt, oldest first."""
    return jsonify(_store().snapshot(time.time()))


@control_blueprint.post("/send")
def send_webhook() -> Response | tuple[Response, int]:
    """Send an arbitrary `social` event: for `profileKey` (its refId and title), or a bare `refId` (any, even one
    no profile has) through the Primary Profile's hook; 409 when no hook would receive it."""
    config: EmulatorConfig = current_app.config["EMULATOR_CONFIG"]
    state: EmulatorState = current_app.config["EMULATOR_STATE"]
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify({"error": "the body must be a JSON object"}), 400
    kind, platform, source = body.get("type"), body.get("platform"), body.get("source")
    if kind not in SOCIAL_TYPES:
        return jsonify({"error": f"type must be one of: {', '.join(SOCIAL_TYPES)}"}), 400
    if platform not in NETWORKS:
        return jsonify({"error": f"platform must be one of: {', '.join(NETWORKS)}"}), 400
    if source is not None and source not in SOURCES:
        return jsonify({"error": f"source must be one of: {', '.join(SOURCES)}"}), 400
    profile_key = body.get("profileKey")
    if profile_key is not None:
        profile = state.profile(config, profile_key) if isinstance(profile_key, str) else None
        if profile is None:
            return jsonify({"error": "profileKey names no live profile"}), 400
        owner_key, ref_id, title = profile_key, profile.ref_id, profile.title
        linked = {entry["platform"]: entry for entry in state.linked_accounts(profile_key)}
        display_name = linked.get(platform, {}).get("displayName")
    else:
        owner_key, ref_id, title, display_name = PRIMARY_PROFILE, body.get("refId"), None, None
        if not isinstance(ref_id, str) or not ref_id:
            return jsonify({"error": "give profileKey or refId"}), 400
    refresh_by = None
    if kind == "refresh":
        refresh_by = iso_time(time.time() + DEFAULT_REFRESH_DAYS * 86400)
    event = social_event(
        kind,
        platform,
        ref_id,
        body.get("title", title),
        source=source or ("system" if kind == "refresh" else "user"),
        display_name=body.get("displayName", display_name),
        refresh_by=body.get("refreshBy", refresh_by),
        details=body.get("details"),
    )
    sent = dispatch(owner_key, event)
    if sent is None:
        return jsonify({"error": "no social webhook is registered for this profile or the Primary Profile"}), 409
    return jsonify({**sent, "event": event})
