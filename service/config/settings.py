"""`Settings` and `load_settings()`: the process environment over `.env`, secrets from `<NAME>_FILE`, validated once.

Any problem raises `ConfigError`, whose message names the setting and never its value. Nothing else in the service
reads `os.environ`.
"""

from __future__ import annotations

import contextlib
import difflib
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from dotenv import dotenv_values, find_dotenv
from marshmallow import ValidationError

from ..urls import web_origin
from .connections import can_create
from .keys import KeyFormatError, SigningKey, load_signing_key, parse_fernet_keys
from .schema import NOT_SETTINGS, SETTING_PREFIXES, SettingsSchema, setting_names

SECRET_SETTINGS = (
    "AYRSHARE_API_KEY",
    "AYRSHARE_PRIVATE_KEY",
    "CONNECT_SIGNING_SECRET",
    "INTERNAL_API_TOKEN",
    "JWT_HS256_SECRET",
    "CACHE_ENCRYPTION_KEY",
    "DATA_ENCRYPTION_KEY",
    "AYRSHARE_WEBHOOK_SECRET",
    "WEBHOOK_FORWARD_SECRET",
    "DATABASE_URL",
    "AYRSHARE_TWITTER_API_KEY",
    "AYRSHARE_TWITTER_API_SECRET",
    "REDIS_URL",  # may carry the Redis password
)


class ConfigError(Exception):
    """A setting is missing or invalid. `str(error)` is one line naming the setting, safe to print."""


@dataclass(frozen=True)
class Settings:
    api_key: str = field(repr=False)
    domain: str
    base_url: str
    profile_keys_file: str | None = None
    signing_key: SigningKey | None = field(repr=False, default=None)  # only with link_flow "jwt"
    link_flow: str = "session"
    twitter_api_key: str | None = field(repr=False, default=None)
    twitter_api_secret: str | None = field(repr=False, default=None)
    default_allowed_social: tuple[str, ...] = ()
    default_redirect: str | None = None
    expires_in_minutes: int | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    deadline_seconds: float = 20.0
    request_deadline_seconds: float = 30.0
    circuit_threshold: int = 5
    circuit_cooldown: float = 10.0
    redis_url: str | None = field(repr=False, default=None)  # may carry a password
    redis_timeout: float = 0.25
    connect_auth: tuple[str, ...] = ("signed",)
    signing_secret: str | None = field(repr=False, default=None)
    signed_link_max_ttl: int = 900
    internal_api_token: str | None = field(repr=False, default=None)
    link_min_remaining: int = 60
    link_stale_min: int = 15
    link_allowed_hosts: tuple[str, ...] = ("profile.ayrshare.com",)
    trusted_proxy_count: int = 0
    jwt_jwks_url: str | None = None
    jwt_public_key: str | None = None
    jwt_hs256_secret: str | None = field(repr=False, default=None)
    jwt_algorithms: tuple[str, ...] = ()
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_user_claim: str = "sub"
    jwt_cookie: str | None = None
    jwt_leeway: int = 30
    trusted_proxies: tuple[str, ...] = ()
    auth_user_header: str = "X-Forwarded-User"
    redirect_allowed_hosts: tuple[str, ...] = ()
    cors_allowed_origins: tuple[str, ...] = ()
    rate_limit_enabled: bool = True
    rate_limit_per_address: str = "120/minute"
    rate_limit_per_user: str = "30/minute"
    rate_limit_upstream_per_user: str = "10 per 5 minutes"
    rate_limit_upstream_global: str = "300 per 5 minutes"
    connect_email_per_user: str = "3 per hour"
    connect_email_contact: str | None = None
    connect_email_company: str | None = None
    connect_email_terms_url: str | None = None
    connect_email_privacy_url: str | None = None
    cache_encryption_key: str | None = field(repr=False, default=None)
    log_level: str = "INFO"
    demo: bool = False
    frontend_origins: tuple[str, ...] = ()
    metrics_bind: str = "0.0.0.0:9100"
    # gunicorn's, read by config/gunicorn.conf.py
    bind: str = "0.0.0.0:8000"
    worker_class: str = "gthread"
    workers: int = 2
    threads: int = 128
    worker_connections: int = 1000
    worker_timeout: int = 75
    graceful_timeout: int = 30
    keepalive: int = 5
    backlog: int = 2048
    access_log: bool = False
    forwarded_allow_ips: str = "127.0.0.1"
    # the directory
    data_dir: str = "data"
    database_url: str = field(repr=False, default="")  # may carry a password; filled in by load_settings
    database_migrate_on_start: bool = False
    data_encryption_key: str | None = field(repr=False, default=None)
    profile_auto_create: bool = False
    profile_title_template: str = "{user}"
    profile_create_fields: dict = field(default_factory=dict)
    profile_create_max_per_hour: int = 100
    accounts_cache_seconds: int = 30
    # webhooks
    webhook_secrets: tuple[str, ...] = field(repr=False, default=())
    webhook_tolerance_seconds: int = 300
    public_base_url: str | None = None
    webhook_forward_url: str | None = None
    webhook_forward_secret: str | None = field(repr=False, default=None)
    webhook_forward_max_hours: float = 24.0
    webhook_delivery: str = "thread"

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor and for tests that prove none leaks."""
        values = [
            self.api_key,
            self.signing_key.pem if self.signing_key else None,
            self.signing_secret,
            self.internal_api_token,
            self.twitter_api_key,
            self.twitter_api_secret,
            self.jwt_hs256_secret,
            *(self.cache_encryption_key or "").split(","),
            *(self.data_encryption_key or "").split(","),
            *_url_passwords(self.redis_url),
            *_url_passwords(self.database_url),
            *self.webhook_secrets,
            self.webhook_forward_secret,
        ]
        return [value for value in values if value]


def invoked_from_flask_cli() -> bool:
    """True under the `flask` command: its stdout belongs to the command, and a bad setting ends it with one line."""
    program = Path(sys.argv[0])
    return program.name == "flask" or program.parent.name == "flask"  # `flask ...` or `python -m flask ...`


def settings_file(environ: Mapping[str, str] | None = None) -> Path:
    """The settings file: `ENV_FILE` from the process environment, else `.env` in the working directory."""
    return Path((os.environ if environ is None else environ).get("ENV_FILE") or ".env")


def read_settings_file(path: Path) -> dict[str, str]:
    """The file's settings as python-dotenv parses them (what docker compose's `env_file` also accepts)."""
    try:
        if not path.is_file():
            return {}
        values = dotenv_values(path)
    except (OSError, UnicodeDecodeError) as error:  # unreadable, behind a folder it may not search, or not UTF-8
        raise ConfigError(f"ENV_FILE: cannot read the settings file ({type(error).__name__})") from None
    return {name: value for name, value in values.items() if value is not None}


def process_environment() -> dict[str, str]:
    """`os.environ`, less what Flask's CLI copied into it from `.flaskenv` and `.env` files it found itself."""
    process = dict(os.environ)
    if invoked_from_flask_cli():
        # `flask` loads .flaskenv and the nearest .env (searching up from the working directory) into os.environ,
        # for keys not already set, before the app loads: take those out again so that ENV_FILE, or ./.env only,
        # decides as under gunicorn. A key whose real value equals the file's is read from the file: the same value.
        for name in (".flaskenv", ".env"):
            found = find_dotenv(name, usecwd=True)
            for key, value in (read_settings_file(Path(found)) if found else {}).items():
                if process.get(key) == value:
                    del process[key]
    return process


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the settings file (the environment wins, as with docker/compose; an empty
    variable is unset, so the file fills it in)."""
    if environ is not None:
        return dict(environ)
    process = process_environment()
    return {**read_settings_file(settings_file(process)), **{name: value for name, value in process.items() if value}}


_SECURITY_LISTS = ("jwt_algorithms", "trusted_proxies", "redirect_allowed_hosts", "cors_allowed_origins")


# What Kubernetes sets in every pod for each Service in the namespace (REDIS_SERVICE_HOST, REDIS_PORT_6379_TCP_ADDR,
# ...), and X_PORT=tcp://...: a Service named redis or ayrshare-connect must not stop the start.
_SERVICE_LINK = re.compile(r"[A-Z0-9_]+_(SERVICE_HOST|SERVICE_PORT(_[A-Z0-9_]+)?|PORT_\d+_(TCP|UDP|SCTP)(_[A-Z]+)?)")
_SERVICE_LINK_VALUE = re.compile(r"(tcp|udp|sctp)://")


def known_settings() -> frozenset[str]:
    """The schema's settings, the `<NAME>_FILE` form of each secret, and the variables listed in NOT_SETTINGS."""
    return frozenset([*setting_names(), *(f"{name}_FILE" for name in SECRET_SETTINGS), *NOT_SETTINGS])


def unknown_setting(raw: Mapping[str, str]) -> str | None:
    """One line naming the first variable with a setting's prefix that no setting has, and the closest known name."""
    known = known_settings()
    for name in sorted(raw):
        if not raw[name] or not name.startswith(SETTING_PREFIXES) or name in known or _SERVICE_LINK.fullmatch(name):
            continue
        if name.endswith("_PORT") and _SERVICE_LINK_VALUE.match(raw[name]):
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1)
        if close:
            return f"{name}: not a setting of this service; did you mean {close[0]}?"
        return f"{name}: not a setting of this service (see docs/configuration.md)"
    return None


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    raw = read_environment(environ)
    problem = unknown_setting(raw)
    if problem:
        raise ConfigError(problem)
    raw = _resolve_secret_files(raw)
    raw = {name: value for name, value in raw.items() if value != ""}  # an empty setting counts as unset
    try:
        data = SettingsSchema().load(raw)
    except ValidationError as error:
        raise ConfigError(_first_problem(error.normalized_messages())) from None
    private_key = data.pop("private_key")
    try:
        # Ignored in the session flow: a key left over from the jwt flow must not make the start fail.
        signing_key = load_signing_key(private_key) if data["link_flow"] == "jwt" else None
    except KeyFormatError as error:
        raise ConfigError(f"AYRSHARE_PRIVATE_KEY: {error}") from None
    if data["profile_keys_file"]:
        _check_profile_keys_file(data["profile_keys_file"])
    port, web_concurrency = data.pop("port"), data.pop("web_concurrency")
    data["bind"] = data["bind"] or (f"0.0.0.0:{port}" if port else "0.0.0.0:8000")
    data["workers"] = data["workers"] or web_concurrency or 2
    if not data["database_url"]:  # the schema checked a URL that was given; this one comes from DATA_DIR
        data["database_url"] = default_database_url(data["data_dir"])
        if not can_create(Path(data["data_dir"]).absolute()):
            raise ConfigError("DATA_DIR: cannot create or write the folder there")
    if data["database_migrate_on_start"] is None:  # on by default only for the embedded SQLite file
        data["database_migrate_on_start"] = data["database_url"].startswith("sqlite")
    _check_data_encryption_key(data)
    for name in (
        "default_allowed_social",
        "connect_auth",
        "link_allowed_hosts",
        "frontend_origins",
        "webhook_secrets",
    ) + _SECURITY_LISTS:
        data[name] = tuple(data[name])
    # Compared with browsers' Origin headers and event.origin, which never carry a default port or trailing slash.
    for name in ("frontend_origins", "cors_allowed_origins"):
        data[name] = tuple(web_origin(origin) for origin in data[name])
    return Settings(signing_key=signing_key, **data)


def _resolve_secret_files(raw: dict[str, str]) -> dict[str, str]:
    for name in SECRET_SETTINGS:
        path = raw.get(f"{name}_FILE")
        if not path:
            continue
        if raw.get(name):
            raise ConfigError(f"{name}: set either {name} or {name}_FILE, not both")
        try:
            raw[name] = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(f"{name}_FILE: cannot read the file ({type(error).__name__})") from None
    return raw


def _first_problem(messages: dict) -> str:
    name, problems = sorted(messages.items())[0]
    if name == "_schema":
        return f"configuration: {problems[0]}"
    if isinstance(problems, dict):  # nested structure; not expected for flat settings
        problems = [str(problems)]
    text = problems[0]
    if text == "Missing data for required field.":
        text = "is required but not set"
    return f"{name}: {text}"


def default_database_url(data_dir: str) -> str:
    """The embedded default: a SQLite file in DATA_DIR, so one container or `make run` needs nothing else."""
    return f"sqlite:///{Path(data_dir).absolute() / 'ayrshare-connect.db'}"


def _url_passwords(url: str | None) -> list[str]:
    """A URL's password, as written and percent-decoded, the way each client reads it: SQLAlchemy ends the user info
    at the first "@" (a "#", "?" or "/" may follow in the password), redis-py (`urlsplit`) at the last one."""
    _, scheme_sep, rest = (url or "").partition("://")
    userinfo, at, _ = rest.partition("@")
    readings = [userinfo.partition(":")[2] if scheme_sep and at else ""]
    with contextlib.suppress(ValueError):  # a malformed port: the start refuses such a URL anyway
        readings.append(urlsplit(url or "").password or "")
    return [value for written in readings if written for value in (written, unquote(written))]


def _check_data_encryption_key(data: dict) -> None:
    key = data.get("data_encryption_key")
    if key:
        try:
            parse_fernet_keys(key)
        except ValueError as error:
            raise ConfigError(f"DATA_ENCRYPTION_KEY: {error}") from None
    elif not (data["demo"] and data["database_url"].startswith("sqlite")):
        # Profile keys are stored encrypted; only the embedded demo may derive its key from the API key.
        raise ConfigError("DATA_ENCRYPTION_KEY: is required (profile keys are encrypted at rest), except in the demo")


def _check_profile_keys_file(path: str) -> None:
    # Loaded for real by the profile directory; checked here so a typo stops the start with the setting's name.
    try:
        found = Path(path).is_file()
    except OSError:  # a folder on the way this process may not search
        found = False
    if not found:
        raise ConfigError("PROFILE_KEYS_FILE: no such file, or in a folder this process may not search")
    if not os.access(path, os.R_OK):
        raise ConfigError("PROFILE_KEYS_FILE: this process may not read the file")
