"""ayrshare-connect: sends each of a team's users to Ayrshare's account-linking page without exposing its keys.

`create_app()` is the WSGI entry point (`gunicorn 'service:create_app()'`). It reads and validates the settings once,
builds the long-lived objects (Ayrshare client, link store and broker, caller authenticator, profile directory), keeps
them on `app.extensions`, and registers the blueprints. Configuration errors raise `ConfigError` with one line that
names the setting; `config/gunicorn.conf.py` turns that into a clean exit before any worker starts.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import cli, errors, frontend, health, logs, metrics, ratelimit, routes, security_settings, web_security
from .ayrshare import AyrshareClient
from .broker import LinkBroker
from .cache_crypto import FernetCodec
from .callers import Authenticator
from .circuit import CircuitBreaker
from .connect import ConnectService
from .link_store import MemoryLinkStore, RedisLinkStore
from .profiles import JsonFileDirectory
from .settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "create_app"]

log = logging.getLogger("service")


class ServiceFlask(Flask):
    """Flask, with `ensure_sync` answered once per function instead of on every call.

    Flask asks `inspect.iscoroutinefunction` about every hook and view on every request (seven times per cache hit
    here, ~5 % of it). The hooks are registered once and none is async, so the answer is kept per function.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._sync_callables: dict = {}

    def ensure_sync(self, func):
        try:
            return self._sync_callables[func]
        except KeyError:
            sync = self._sync_callables[func] = super().ensure_sync(func)
            return sync
        except TypeError:  # an unhashable callable: ask every time, as Flask does
            return super().ensure_sync(func)


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from `environ` (tests) or from the process environment and `.env` (everyone else)."""
    try:
        settings = load_settings(environ)
    except ConfigError as error:
        if environ is None and cli.invoked_from_flask_cli():  # gunicorn does the same in its on_starting hook
            sys.stderr.write(f"configuration error: {error}\n")
            raise SystemExit(2) from None
        raise
    app = ServiceFlask(__name__)
    # Werkzeug would answer `/connect//x` with a redirect to `/connect/x` on whatever Host the request named: the
    # service redirects only to linking pages, so a doubled slash is a 404 instead (found by the hypothesis tests).
    app.url_map.merge_slashes = False
    app.config["SETTINGS"] = settings
    app.config["JSON_SORT_KEYS"] = False
    logs.configure_logging(settings.log_level, settings.secrets())
    _warn_about_weakened_settings(settings)

    store = _build_store(settings)
    broker = LinkBroker(
        store=store,
        min_remaining=settings.link_min_remaining,
        stale_min=settings.link_stale_min,
        lock_ttl=settings.deadline_seconds + 1,
        request_seconds=settings.request_deadline_seconds,
        on_event=metrics.broker_event,
    )
    rate_counter = ratelimit.build_counter(settings)
    request_budget, upstream_budget = ratelimit.user_budgets(rate_counter, settings)
    app.extensions["link_store"] = store
    app.extensions["connect"] = ConnectService(
        settings=settings,
        authenticator=Authenticator(settings),
        profiles=JsonFileDirectory(settings.profile_keys_file),
        client=AyrshareClient(settings),
        broker=broker,
        breaker=CircuitBreaker(
            settings.circuit_threshold, settings.circuit_cooldown, on_state_change=metrics.set_circuit_state
        ),
        spend_request_budget=request_budget,
        spend_upstream_budget=upstream_budget,
    )

    errors.init_app(app)
    logs.init_app(app)
    metrics.init_app(app)
    cli.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(frontend.bp)
    web_security.init_app(app, settings)
    ratelimit.init_app(app, rate_counter, settings)
    if settings.trusted_proxy_count:
        # Client address and scheme from X-Forwarded-For/-Proto, trusting exactly that many proxies in front.
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    return app


def _build_store(settings: Settings) -> RedisLinkStore | MemoryLinkStore:
    if not settings.redis_url:
        return MemoryLinkStore()
    try:
        codec = FernetCodec(settings.cache_encryption_key) if settings.cache_encryption_key else None
        return RedisLinkStore.from_url(settings.redis_url, timeout=settings.redis_timeout, codec=codec)
    except ValueError:  # a malformed host list, port or sentinel path; the message could echo part of the URL
        raise ConfigError("REDIS_URL: not a valid Redis URL (see 'Redis URLs' in the README)") from None


def _warn_about_weakened_settings(settings: Settings) -> None:
    for warning in security_settings.weakened_settings(settings):
        log.warning(warning)
    if not settings.redis_url:
        log.warning("REDIS_URL is not set: using an in-process cache (one process only, no shared single-flight).")
