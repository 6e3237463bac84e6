"""Command-line helpers: `flask --app service sign-url <user>` and `flask --app service check-config [--offline]`."""

from __future__ import annotations

import click
import redis
from flask import Flask, current_app

from ..auth import breaks_lines, signed_path
from ..config.connections import database_address, redis_address
from ..errors import BadRequest
from ..links.options import resolve_options
from ..links.store import REDIS_FAILURES
from ..profiles import validate_user

__all__ = ["init_app"]


def init_app(app: Flask) -> None:
    @app.cli.command("sign-url")
    @click.argument("user")
    @click.option(
        "--ttl",
        default=300,
        show_default=True,
        help="Seconds the link stays valid (at most SIGNED_LINK_MAX_TTL_SECONDS).",
    )
    @click.option("--base-url", default="", help="Prefix such as https://connect.example.com.")
    @click.option("--redirect", default=None, help="A 'redirect' for the link, signed with it.")
    @click.option("--allowed-social", default=None, help="An 'allowedSocial' list for the link, signed with it.")
    def sign_url(user: str, ttl: int, base_url: str, redirect: str | None, allowed_social: str | None) -> None:
        """Print a signed /connect link for USER (what the team's backend hands its frontend)."""
        settings = current_app.config["SETTINGS"]
        if not settings.signing_secret:
            raise click.UsageError("CONNECT_SIGNING_SECRET is not set")
        # Each check is the service's own: it would refuse the link printed.
        if not 0 < ttl <= settings.signed_link_max_ttl:
            raise click.BadParameter(
                f"must be 1 to SIGNED_LINK_MAX_TTL_SECONDS ({settings.signed_link_max_ttl})", param_hint="'--ttl'"
            )
        options = {"redirect": redirect, "allowedSocial": allowed_social}
        if breaks_lines(options):
            raise click.UsageError("--redirect and --allowed-social must be one line each.")
        try:
            validate_user(user)
            resolve_options({name: value for name, value in options.items() if value is not None}, settings)
        except BadRequest as error:
            raise click.UsageError(error.message) from None
        click.echo(base_url.rstrip("/") + signed_path(user, settings.signing_secret, ttl, options=options))

    @app.cli.command("check-config")
    @click.option("--offline", is_flag=True, help="Only the settings: do not try to reach Redis or the database.")
    def check_config(offline: bool) -> None:
        """Validate every setting, then try Redis (PING) and the database (reachable, migrated); non-zero on failure."""
        settings = current_app.config["SETTINGS"]
        store = current_app.extensions["link_store"]
        click.echo(f"configuration ok (auth: {','.join(settings.connect_auth)}, cache: {store.name})")
        if offline:
            return
        failed = False
        if not settings.redis_url:
            click.echo("cache: in-process (REDIS_URL is not set), nothing to reach")
        elif (problem := _redis_problem(store.client)) is None:
            click.echo(f"cache: ok (Redis at {redis_address(settings.redis_url)})")
        else:
            failed = True
            click.echo(f"cache: failing (Redis at {redis_address(settings.redis_url)} {problem})")
        state = current_app.extensions["database"].ping()
        where = database_address(settings.database_url)
        if state == "ok":
            click.echo(f"database: ok ({where})")
        elif state == "not_migrated" and settings.database_migrate_on_start:
            click.echo(f"database: not migrated yet; bin/boot migrates it as it starts ({where})")
        elif state == "not_migrated":
            failed = True
            click.echo("database: not migrated (run `flask --app service db upgrade`)")
        else:
            failed = True
            click.echo(f"database: failing ({where} does not answer or refuses the user, password or database name)")
        if failed:
            raise click.exceptions.Exit(1)


def _redis_problem(client) -> str | None:
    """None when Redis answers a PING, else why not (the error's type, never its text: it may quote the URL)."""
    try:
        if client.ping():
            return None
    except redis.AuthenticationError:
        return "refuses the user or password in REDIS_URL"
    except REDIS_FAILURES as error:
        return f"does not answer PING ({type(error).__name__})"
    return "does not answer PING"
