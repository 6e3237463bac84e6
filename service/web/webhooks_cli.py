"""`flask webhooks register|unregister|deliver`: the Ayrshare hook for `social` events, and the delivery loop
for deployments that run it as its own process (`WEBHOOK_DELIVERY=process`)."""

from __future__ import annotations

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from ..errors import ServiceError

webhooks_cli = AppGroup("webhooks", help="Ayrshare's webhooks in, and passing them on to WEBHOOK_FORWARD_URL.")

HOOK_PATH = "/webhooks/ayrshare"


def init_app(app: Flask) -> None:
    app.cli.add_command(webhooks_cli)


@webhooks_cli.command("register")
def register() -> None:
    """Register PUBLIC_BASE_URL/webhooks/ayrshare with Ayrshare for `social` events."""
    settings = current_app.config["SETTINGS"]
    if not settings.public_base_url:
        raise click.UsageError("PUBLIC_BASE_URL is not set (the https address Ayrshare can reach this service at)")
    if not settings.webhook_secrets:
        raise click.UsageError("AYRSHARE_WEBHOOK_SECRET is not set (deliveries could not be verified)")
    url = settings.public_base_url.rstrip("/") + HOOK_PATH
    _run(lambda: current_app.extensions["client"].register_webhook("social", url, settings.webhook_secrets[0]))
    click.echo(f"registered {url} for social events")


@webhooks_cli.command("unregister")
def unregister() -> None:
    """Remove the `social` hook at Ayrshare."""
    _run(lambda: current_app.extensions["client"].unregister_webhook("social"))
    click.echo("unregistered the social webhook")


@webhooks_cli.command("deliver")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def deliver(once: bool) -> None:
    """Pass accepted events on to WEBHOOK_FORWARD_URL, retrying with backoff (runs until stopped)."""
    worker = current_app.extensions.get("webhook_worker")
    if worker is None:
        raise click.UsageError("WEBHOOK_FORWARD_URL is not set: there is nothing to deliver")
    if once:
        click.echo(f"delivered {worker.run_once()}")
        return
    click.echo("delivering webhook events (Ctrl-C stops)", err=True)
    try:
        worker.run_forever()
    except KeyboardInterrupt:
        worker.stop()


def _run(action) -> None:
    try:
        action()
    except ServiceError as error:
        raise click.ClickException(f"{error.message} ({error.code})") from None
