"""ayrshare-connect: sends each of a team's users to Ayrshare's account-linking page without exposing its keys.

`create_app()` is the WSGI entry point (`gunicorn 'service:create_app()'`): it loads the settings once, builds the
long-lived objects, keeps them on `app.extensions` and registers the blueprints. A bad setting raises `ConfigError`
with one line that names it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, NoReturn

from .config import ConfigError, Settings, load_settings
from .config.settings import invoked_from_flask_cli

if TYPE_CHECKING:
    from flask import Flask

    from .profiles import Database, Directory, ProfileLookup

__all__ = ["ConfigError", "create_app"]

log = logging.getLogger("service")


def create_app(environ: Mapping[str, str] | None = None) -> Flask:
    """Build the app from `environ` (tests) or from the process environment and `.env` (everyone else)."""
    try:
        return _build_app(load_settings(environ))
    except ConfigError as error:
        if environ is None and invoked_from_flask_cli():  # gunicorn's config file does the same
            if _listing_commands():
                return _unconfigured_app(error)
            _exit_with(error)
        raise


def _build_app(settings: Settings) -> Flask:
    """The app for these settings; ConfigError for what only building reveals (a folder that cannot be created)."""
    # Imported here so that gunicorn's config file can load `service.config` before gevent patches the standard
    # library and before prometheus-client reads PROMETHEUS_MULTIPROC_DIR.
    from flask import Flask
    from werkzeug.middleware.proxy_fix import ProxyFix

    from .auth import Authenticator
    from .config.checks import weakened_settings
    from .links import ConnectService, LinkBroker, UserLinks
    from .profiles import Provisioner, UserAccounts, UserAdmin
    from .upstream import AyrshareClient, CircuitBreaker
    from .web import (
        cli,
        errors,
        headers,
        health,
        internal,
        logs,
        metrics,
        openapi,
        pages,
        profiles_cli,
        ratelimit,
        routes,
        webhooks,
        webhooks_cli,
    )

    app = Flask(__name__, static_folder="web/static", template_folder="web/templates")
    # Werkzeug would answer `/connect//x` with a redirect to `/connect/x` on whatever Host the request named: the
    # service redirects only to linking pages, so a doubled slash is a 404 instead.
    app.url_map.merge_slashes = False
    app.config["SETTINGS"] = settings
    logs.configure_logging(settings.log_level, settings.secrets())
    for warning in weakened_settings(settings):
        log.warning(warning)
    if not settings.redis_url:
        log.warning("REDIS_URL is not set: using an in-process cache (one process only, no shared single-flight).")

    store = _build_store(settings)
    spend_request, spend_upstream = ratelimit.user_budgets(settings, on_refused=metrics.rate_limited)
    client = AyrshareClient(settings)
    breaker = CircuitBreaker(
        settings.circuit_threshold, settings.circuit_cooldown, on_state_change=metrics.set_circuit_state
    )
    database, directory, profiles = _build_directory(settings, store)
    provisioner = Provisioner(
        directory,
        profiles,
        client,
        settings.profile_title_template,
        settings.profile_create_fields,
        lease_seconds=settings.deadline_seconds + 5,  # the one Ayrshare call, then storing its answer
        spend_budget=ratelimit.profile_create_budget(settings, metrics.rate_limited),
        on_event=metrics.profile_event,
        breaker=breaker,
    )
    app.extensions["link_store"] = store
    app.extensions["database"] = database
    app.extensions["connect"] = ConnectService(
        settings=settings,
        authenticator=Authenticator(settings),
        profiles=profiles,
        client=client,
        broker=LinkBroker(
            store=store,
            min_remaining=settings.link_min_remaining,
            stale_min=settings.link_stale_min,
            lock_ttl=settings.deadline_seconds + 1,
            request_seconds=settings.request_deadline_seconds,
            on_event=metrics.broker_event,
            url_ok=client.servable,
        ),
        breaker=breaker,
        spend_request_budget=spend_request,
        spend_upstream_budget=spend_upstream,
        observe_upstream=metrics.observe_upstream_call,
        provisioner=provisioner if settings.profile_auto_create else None,
    )
    app.extensions["user_links"] = user_links = UserLinks(
        settings,
        profiles,
        client,
        store,
        breaker,
        spend_email_budget=ratelimit.connect_email_budget(settings, metrics.rate_limited),
    )
    app.extensions["users"] = UserAdmin(
        directory, profiles, provisioner, client, revoke_links=user_links.revoke, breaker=breaker
    )
    _build_webhooks(app, settings, database, user_links)
    app.extensions["client"] = client
    app.extensions["accounts"] = UserAccounts(
        directory,
        profiles,
        client,
        store,
        cache_seconds=settings.accounts_cache_seconds,
        lock_seconds=settings.deadline_seconds + 1,
        breaker=breaker,
    )

    errors.init_app(app)
    logs.init_app(app)
    metrics.init_app(app)
    cli.init_app(app)
    profiles_cli.init_app(app)
    webhooks_cli.init_app(app)
    openapi.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(routes.bp)
    app.register_blueprint(internal.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(webhooks.bp)
    headers.init_app(app, settings)
    ratelimit.init_app(app, settings, on_refused=metrics.rate_limited)
    if settings.trusted_proxy_count:
        # Client address and scheme from X-Forwarded-For/-Proto, trusting exactly that many proxies in front.
        n = settings.trusted_proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    return app


def _build_webhooks(app: Flask, settings: Settings, database, user_links) -> None:
    """Ayrshare's webhooks in (with AYRSHARE_WEBHOOK_SECRET) and the outbox to WEBHOOK_FORWARD_URL (when set)."""
    from .errors import ServiceError
    from .web import metrics
    from .webhooks import DeliveryWorker, Forwarder, Outbox, WebhookReceiver

    outbox = worker = None
    if settings.webhook_forward_url:
        outbox = Outbox(database, settings.webhook_forward_max_hours)
        forwarder = Forwarder(settings.webhook_forward_url, settings.webhook_forward_secret)
        worker = DeliveryWorker(outbox, forwarder, on_result=metrics.webhook_forwarded)

    def accepted(user: str | None) -> None:
        if user is not None:
            try:
                user_links.drop_cached(user)
            except ServiceError:
                log.warning("cached links not dropped after a webhook: redis unavailable")
        if worker is not None:
            worker.wake()

    receiver = None
    if settings.webhook_secrets:
        receiver = WebhookReceiver(
            database,
            settings.webhook_secrets,
            settings.webhook_tolerance_seconds,
            forward=outbox is not None,
            forward_max_hours=settings.webhook_forward_max_hours,
            on_accepted=accepted,
            on_outcome=metrics.webhook_received,
        )
    app.extensions.update(webhook_receiver=receiver, webhook_outbox=outbox, webhook_worker=worker)
    # Each gunicorn worker delivers in a thread (the outbox's leases keep each event to one sender at a time); the
    # Flask CLI never does, so `flask profiles list` does not start sending.
    if worker is not None and settings.webhook_delivery == "thread" and not invoked_from_flask_cli():
        worker.start()


def _exit_with(error: ConfigError) -> NoReturn:
    sys.stderr.write(f"configuration error: {error}\n")
    raise SystemExit(2) from None


def _listing_commands() -> bool:
    """True while `flask` loads the app to list or find its commands, before any command (or its --help) runs.

    Flask's own commands (run, shell, routes) load the app from inside their callback, where this is False.
    """
    import click

    context = click.get_current_context(silent=True)
    return context is not None and isinstance(context.command, click.Group)


def _unconfigured_app(error: ConfigError) -> Flask:
    """An app with every command and its help, each of which ends with the configuration error when it runs."""
    import copy

    import click
    from flask import Flask

    from .web import cli, openapi, profiles_cli, webhooks_cli

    def refuse(**_: object) -> None:
        _exit_with(error)

    def unconfigured(command: click.Command) -> click.Command:
        # Copies: the module-level groups keep their real commands for apps that are configured.
        command = copy.copy(command)
        if isinstance(command, click.Group):
            command.commands = {name: unconfigured(sub) for name, sub in command.commands.items()}
        else:
            command.callback = refuse
        return command

    app = Flask(__name__)
    cli.init_app(app)
    openapi.init_app(app)
    profiles_cli.init_app(app)
    webhooks_cli.init_app(app)
    app.cli.commands = {name: unconfigured(command) for name, command in app.cli.commands.items()}
    return app


def _build_directory(settings: Settings, store) -> tuple[Database, Directory, ProfileLookup]:
    """The database, the directory on it, and the lookup that `/connect` asks (file first, then a cached directory)."""
    from .crypto import FernetCodec, derived_cache_key
    from .profiles import Database, Directory, JsonFileDirectory, LookupCache, ProfileLookup

    database = Database(settings.database_url)
    # Only the embedded demo may go without DATA_ENCRYPTION_KEY (load_settings refuses it elsewhere).
    key = settings.data_encryption_key or derived_cache_key(settings.api_key, b"ayrshare-connect demo directory v1")
    directory = Directory(database, FernetCodec(key))
    cache = LookupCache(redis_client=getattr(store, "client", None), listen=not invoked_from_flask_cli())
    file = JsonFileDirectory(settings.profile_keys_file) if settings.profile_keys_file else None
    return database, directory, ProfileLookup(directory, cache, file)


def _build_store(settings: Settings):
    from .crypto import FernetCodec
    from .links import MemoryLinkStore, RedisLinkStore
    from .links.store import REDIS_FAILURES
    from .web import metrics

    if not settings.redis_url:
        return MemoryLinkStore()
    codec = FernetCodec.for_settings(settings.cache_encryption_key, settings.api_key)
    try:
        return RedisLinkStore.from_url(
            settings.redis_url, timeout=settings.redis_timeout, codec=codec, on_rejected=metrics.cache_rejected
        )
    except REDIS_FAILURES:  # only a Cluster client connects as it is made
        raise ConfigError("REDIS_URL: the Redis Cluster cannot be reached or refuses the connection") from None
