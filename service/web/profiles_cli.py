"""`flask db upgrade` and `flask profiles import|export|list|create|delete|pending|release|reencrypt`: the
directory by hand.

Each command calls the same plain objects as the internal API; `export` prints profile keys (it is the backup), every
other command keeps them out of its output.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from ..errors import ServiceError
from ..profiles import user_json, validate_user

db_cli = AppGroup("db", help="The directory's database schema (Alembic migrations).")
profiles_cli = AppGroup("profiles", help="The directory of users and their Ayrshare profiles.")


def init_app(app: Flask) -> None:
    app.cli.add_command(db_cli)
    app.cli.add_command(profiles_cli)


@db_cli.command("upgrade")
@click.option("--on-start", is_flag=True, help="Only if DATABASE_MIGRATE_ON_START is true (what bin/boot runs).")
def db_upgrade(on_start: bool) -> None:
    """Apply every migration the code has (safe to repeat)."""
    if on_start and not current_app.config["SETTINGS"].database_migrate_on_start:
        return
    database = current_app.extensions["database"]
    database.upgrade()
    click.echo(f"database at revision {database.head_revision()} ({database.dialect})")


@profiles_cli.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--check/--no-check", default=False, help="Check each key with Ayrshare (GET /api/user) first.")
def profiles_import(path: str, check: bool) -> None:
    """Copy a PROFILE_KEYS_FILE-style JSON file ({"<user>": "<profile key>"}) into the directory."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError:
        raise click.ClickException("not valid JSON") from None
    if not isinstance(entries, dict) or not all(isinstance(v, str) for v in entries.values()):
        raise click.ClickException('expected a JSON object {"<user>": "<profile key>", ...}')
    added = replaced = 0
    for user, key in sorted(entries.items()):
        _run(lambda u=user: validate_user(u), user)
        _, created = _run(lambda u=user, k=key: _users().import_user(u, k, check=check), user)
        added, replaced = added + created, replaced + (not created)
    click.echo(f"imported {added} new, {replaced} replaced")


@profiles_cli.command("export")
def profiles_export() -> None:
    """Print every active user and profile key as JSON (the format `import` and PROFILE_KEYS_FILE read)."""
    click.echo(json.dumps({r.user: r.profile_key for r in _all() if r.state == "active"}, indent=2, sort_keys=True))


@profiles_cli.command("list")
def profiles_list() -> None:
    """One line per user: id, state, source, refId, title (no keys)."""
    for record in _all():
        click.echo(f"{record.user}\t{record.state}\t{record.source}\t{record.ref_id or '-'}\t{record.title or '-'}")


@profiles_cli.command("create")
@click.argument("user")
def profiles_create(user: str) -> None:
    """Create USER's Ayrshare profile now (never a second one)."""
    _run(lambda: validate_user(user), user)
    record, created = _run(lambda: _users().create(user), user)
    click.echo(f"{'created' if created else 'already had'} profile {record.ref_id or '-'} for {user}")


@profiles_cli.command("delete")
@click.argument("user")
@click.option("--delete-profile", is_flag=True, help="Also delete the profile at Ayrshare.")
def profiles_delete(user: str, delete_profile: bool) -> None:
    """Forget USER (their links are revoked); with --delete-profile, delete the Ayrshare profile too."""
    _run(lambda: _users().delete(user, delete_profile=delete_profile), user)
    click.echo(f"deleted {user}")


@profiles_cli.command("pending")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def profiles_pending(as_json: bool) -> None:
    """Profile creations that have not finished; those past their lease need an operator (docs/profiles.md)."""
    records = current_app.extensions["users"].directory.pending()
    for record in records:
        state = "in_progress" if record.in_flight() else "needs_operator"
        if as_json:
            body = {k: v for k, v in user_json(record, with_key=False).items() if not k.startswith("linked")}
            click.echo(json.dumps({**body, "status": state, "reason": record.pending_reason}))
        else:
            click.echo(f"{record.user}\t{state}\t{record.pending_reason or '-'}\ttitle={record.title}")
    if not records and not as_json:
        click.echo("no pending profile creations", err=True)


@profiles_cli.command("reencrypt")
def profiles_reencrypt() -> None:
    """Re-encrypt every stored profile key under DATA_ENCRYPTION_KEY's first key; then the old keys can go."""
    count = _run(lambda: current_app.extensions["users"].directory.reencrypt(), "directory")
    click.echo(f"re-encrypted {count} profile keys under the first DATA_ENCRYPTION_KEY")


@profiles_cli.command("release")
@click.argument("user")
@click.confirmation_option(prompt="Only if Ayrshare has no profile with this claim's title. Release it?")
def profiles_release(user: str) -> None:
    """Remove USER's pending claim after checking Ayrshare's dashboard, so the next connect creates a profile."""
    if not current_app.extensions["users"].directory.release_pending(user):
        raise click.ClickException(f"{user} has no pending claim")
    current_app.extensions["users"].lookup.changed(user)
    click.echo(f"released {user}")


def _users():
    return current_app.extensions["users"]


def _all():
    directory, after = current_app.extensions["users"].directory, None
    while page := directory.page(500, after):
        yield from page
        after = page[-1].user


def _run(action, user: str):
    try:
        return action()
    except ServiceError as error:
        click.echo(f"{user}: {error.message} ({error.code})", err=True)
        sys.exit(1)
