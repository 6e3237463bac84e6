"""Ayrshare emulator: a local, faithful stand-in for Ayrshare's generateJWT, Link Sessions, Profiles and webhook
APIs, its linking page and its signed webhook deliveries.

Development tool only (tests, demos, benchmarks); never on the production path. Start it with
`python -m emulator --help`, or build the WSGI app in-process with `create_app(EmulatorConfig(...))`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from emulator.config import EmulatorConfig

if TYPE_CHECKING:
    from flask import Flask

__all__ = ["EmulatorConfig", "create_app"]


def create_app(config: EmulatorConfig) -> Flask:
    """Build the emulator's Flask app; each app has its own state, so instances never share counters."""
    # Imported here rather than at the top: `python -m emulator` imports this package before its __main__ runs, and
    # __main__ patches the standard library for gevent (emulator/serving.py), which must happen before Flask loads.
    from flask import Flask

    from emulator import control, jwt_api, link_sessions, linking_page, profiles_api, webhooks
    from emulator.state import EmulatorState

    app = Flask(__name__)
    app.config["EMULATOR_CONFIG"] = config
    app.config["EMULATOR_STATE"] = EmulatorState()
    app.config["EMULATOR_WEBHOOKS"] = webhooks.WebhookStore()
    # Keep the vendor's key order (status, title, token, url, ...) instead of alphabetising it.
    app.json.sort_keys = False
    app.register_blueprint(jwt_api.blueprint)
    app.register_blueprint(link_sessions.blueprint)
    app.register_blueprint(profiles_api.blueprint)
    app.register_blueprint(linking_page.blueprint)
    app.register_blueprint(webhooks.blueprint)
    app.register_blueprint(control.blueprint)
    app.register_blueprint(webhooks.control_blueprint)
    link_path = urlsplit(config.link_base).path if config.link_base else ""
    if link_path not in ("", "/"):
        # A --link-base with a path on this server must still reach the page the URLs point to.
        app.add_url_rule(link_path, "linking_page_at_link_base", linking_page.linking_page)
        app.add_url_rule(
            link_path, "linking_page_action_at_link_base", linking_page.linking_page_action, methods=["POST"]
        )
    return app
