"""Command-line helpers: `flask --app service sign-url <user>` and `flask --app service check-config`."""

from __future__ import annotations

import click
from flask import Flask, current_app

from ..auth import signed_path
from ..config.settings import invoked_from_flask_cli

__all__ = ["init_app", "invoked_from_flask_cli"]


def init_app(app: Flask) -> None:
    @app.cli.command("sign-url")
    @click.argument("user")
    @click.option("--ttl", default=300, show_default=True, help="Seconds the link stays valid.")
    @click.option("--base-url", default="", help="Prefix such as https://connect.example.com.")
    @click.option("--redirect", default=None, help="A 'redirect' for the link, signed with it.")
    @click.option("--allowed-social", default=None, help="An 'allowedSocial' list for the link, signed with it.")
    def sign_url(user: str, ttl: int, base_url: str, redirect: str | None, allowed_social: str | None) -> None:
        """Print a signed /connect link for USER (what the team's backend hands its frontend)."""
        settings = current_app.config["SETTINGS"]
        if not settings.signing_secret:
            raise click.UsageError("CONNECT_SIGNING_SECRET is not set")
        options = {"redirect": redirect, "allowedSocial": allowed_social}
        click.echo(base_url.rstrip("/") + signed_path(user, settings.signing_secret, ttl, options=options))

    @app.cli.command("check-config")
    def check_config() -> None:
        """Load and validate every setting; exits non-zero with one line naming a bad setting."""
        settings = current_app.config["SETTINGS"]
        click.echo(
            f"configuration ok (auth: {','.join(settings.connect_auth)}, cache: "
            f"{current_app.extensions['link_store'].name})"
        )
