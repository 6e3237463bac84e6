"""Emulator-only control endpoints under `/_emulator/` (knobs, stats, emails, profiles, reset, health; webhooks.py
adds `/_emulator/webhooks`).

They have no authentication: the emulator is a development tool bound to loopback, never deployed.
"""

from __future__ import annotations

from flask import Blueprint, Response, current_app, jsonify, request

from emulator.knobs import KnobError
from emulator.state import EmulatorState
from emulator.webhooks import WebhookStore

blueprint = Blueprint("control", __name__, url_prefix="/_emulator")


def _state() -> EmulatorState:
    return current_app.config["EMULATOR_STATE"]


def _webhooks() -> WebhookStore:
    return current_app.config["EMULATOR_WEBHOOKS"]


@blueprint.get("/health")
def health() -> Response:
    return jsonify({"ok": True})


@blueprint.get("/knobs")
def get_knobs() -> Response:
    return jsonify(_state().knobs.as_dict())


@blueprint.post("/knobs")
def set_knobs() -> Response | tuple[Response, int]:
    """Merge a JSON object of knobs into the current ones and return the result."""
    try:
        knobs = _state().update_knobs(request.get_json(silent=True))
    except KnobError as exc:
        return jsonify({"error": str(exc)}), 400
    return jsonify(knobs.as_dict())


@blueprint.get("/stats")
def stats() -> Response:
    return jsonify({**_state().stats(), **_webhooks().stats()})


@blueprint.get("/emails")
def emails() -> Response:
    """The Connect Accounts emails the API would have sent, oldest first, each with the linking URL it carries."""
    return jsonify(_state().emails())


@blueprint.get("/profiles")
def profiles() -> Response:
    """The User Profiles created through the API and not deleted (title, refId, linked networks; never their keys,
    as the vendor's own list never shows them), how many there are and how many keys were deleted."""
    created = _state().created_profiles()
    return jsonify({"count": len(created), "profiles": created, "deleted": _state().deleted_count()})


@blueprint.post("/reset")
def reset() -> Response:
    _state().reset()
    _webhooks().reset()
    return jsonify({"ok": True})
