"""Every setting of the service: names, defaults, validation, and where secrets are read from.

Settings come from the process environment, with a `.env` file in the working directory filling in what the
environment leaves unset. They are validated once, at start, by a marshmallow schema; any problem raises
`ConfigError` whose message names the setting and never its value. Nothing else in the service reads `os.environ`.

Secrets (`AYRSHARE_API_KEY`, `AYRSHARE_PRIVATE_KEY`, `CONNECT_SIGNING_SECRET`, ...) may instead be given as a path in
`<NAME>_FILE`, which is how Docker/Kubernetes secrets arrive.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from dotenv import dotenv_values
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from .keys import KeyFormatError, SigningKey, load_signing_key

AUTH_MODES = ("signed", "none")
SECRET_SETTINGS = (
    "AYRSHARE_API_KEY",
    "AYRSHARE_PRIVATE_KEY",
    "CONNECT_SIGNING_SECRET",
    "INTERNAL_API_TOKEN",
    "AYRSHARE_TWITTER_API_KEY",
    "AYRSHARE_TWITTER_API_SECRET",
)
# Networks Ayrshare's linking page can show (names as used by `allowedSocial`).
SUPPORTED_NETWORKS = frozenset(
    {
        "bluesky",
        "facebook",
        "gmb",
        "instagram",
        "linkedin",
        "pinterest",
        "reddit",
        "snapchat",
        "telegram",
        "threads",
        "tiktok",
        "twitter",
        "youtube",
    }
)


class ConfigError(Exception):
    """A setting is missing or invalid. `str(error)` is one line naming the setting, safe to print."""


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


class _CommaList(fields.Field):
    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str):
            raise ValidationError("must be a comma-separated list")
        return [item.lower() for item in _csv(value)]


class _SettingsSchema(Schema):
    """Environment variable names are the schema's data keys; attribute names are the Settings fields."""

    class Meta:
        unknown = EXCLUDE

    api_key = fields.String(data_key="AYRSHARE_API_KEY", required=True, validate=validate.Length(min=1))
    private_key = fields.String(data_key="AYRSHARE_PRIVATE_KEY", required=True, validate=validate.Length(min=1))
    domain = fields.String(data_key="AYRSHARE_DOMAIN", required=True, validate=validate.Length(min=1, max=253))
    base_url = fields.Url(data_key="AYRSHARE_BASE_URL", load_default="https://api.ayrshare.com/api", require_tld=False)
    twitter_api_key = fields.String(data_key="AYRSHARE_TWITTER_API_KEY", load_default=None)
    twitter_api_secret = fields.String(data_key="AYRSHARE_TWITTER_API_SECRET", load_default=None)
    default_allowed_social = _CommaList(data_key="AYRSHARE_ALLOWED_SOCIAL", load_default=list)
    default_redirect = fields.Url(data_key="AYRSHARE_REDIRECT", load_default=None, require_tld=False)
    expires_in_minutes = fields.Integer(
        data_key="AYRSHARE_EXPIRES_IN", load_default=None, validate=validate.Range(1, 2880)
    )
    connect_timeout = fields.Float(
        data_key="AYRSHARE_CONNECT_TIMEOUT", load_default=3.0, validate=validate.Range(0.1, 30)
    )
    read_timeout = fields.Float(data_key="AYRSHARE_READ_TIMEOUT", load_default=10.0, validate=validate.Range(0.1, 60))
    deadline_seconds = fields.Float(
        data_key="AYRSHARE_DEADLINE_SECONDS", load_default=20.0, validate=validate.Range(0.5, 30)
    )

    redis_url = fields.String(data_key="REDIS_URL", load_default=None)
    redis_timeout = fields.Float(data_key="REDIS_TIMEOUT", load_default=0.25, validate=validate.Range(0.01, 5))
    profile_keys_file = fields.String(data_key="PROFILE_KEYS_FILE", required=True)

    connect_auth = _CommaList(data_key="CONNECT_AUTH", load_default=lambda: ["signed"])
    signing_secret = fields.String(data_key="CONNECT_SIGNING_SECRET", load_default=None)
    signed_link_max_ttl = fields.Integer(
        data_key="SIGNED_LINK_MAX_TTL_SECONDS", load_default=86400, validate=validate.Range(10, 30 * 86400)
    )
    internal_api_token = fields.String(data_key="INTERNAL_API_TOKEN", load_default=None)

    link_min_remaining = fields.Integer(
        data_key="LINK_MIN_REMAINING_SECONDS", load_default=60, validate=validate.Range(0, 86400)
    )
    link_stale_min = fields.Integer(data_key="LINK_STALE_MIN_SECONDS", load_default=15, validate=validate.Range(0))
    link_allowed_hosts = _CommaList(data_key="LINK_ALLOWED_HOSTS", load_default=lambda: ["profile.ayrshare.com"])

    trusted_proxy_count = fields.Integer(data_key="TRUSTED_PROXY_COUNT", load_default=0, validate=validate.Range(0, 5))
    log_level = fields.String(
        data_key="LOG_LEVEL",
        load_default="INFO",
        validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]),
    )
    demo = fields.Boolean(data_key="DEMO_MODE", load_default=False)

    @validates_schema
    def _check_combinations(self, data: dict, **kwargs: Any) -> None:
        unknown = [mode for mode in data["connect_auth"] if mode not in AUTH_MODES]
        if unknown or not data["connect_auth"]:
            raise ValidationError(f"must be a comma-separated list of {', '.join(AUTH_MODES)}", "CONNECT_AUTH")
        if "signed" in data["connect_auth"]:
            secret = data.get("signing_secret")
            if not secret:
                raise ValidationError("is required when CONNECT_AUTH includes 'signed'", "CONNECT_SIGNING_SECRET")
            if len(secret) < 32:
                raise ValidationError(
                    "must be at least 32 characters (e.g. openssl rand -hex 32)", "CONNECT_SIGNING_SECRET"
                )
        token = data.get("internal_api_token")
        if token is not None and len(token) < 24:
            raise ValidationError("must be at least 24 characters when set", "INTERNAL_API_TOKEN")
        if bool(data["twitter_api_key"]) != bool(data["twitter_api_secret"]):
            raise ValidationError(
                "set both AYRSHARE_TWITTER_API_KEY and _SECRET, or neither", "AYRSHARE_TWITTER_API_SECRET"
            )
        bad = sorted(set(data["default_allowed_social"]) - SUPPORTED_NETWORKS)
        if bad:
            raise ValidationError(f"unknown network name(s): {', '.join(bad)}", "AYRSHARE_ALLOWED_SOCIAL")
        if data["link_stale_min"] > data["link_min_remaining"]:
            raise ValidationError("must not exceed LINK_MIN_REMAINING_SECONDS", "LINK_STALE_MIN_SECONDS")
        if data["redis_url"] and urlsplit(data["redis_url"]).scheme not in {"redis", "rediss", "unix"}:
            raise ValidationError("must be a redis://, rediss:// or unix:// URL", "REDIS_URL")


@dataclass(frozen=True)
class Settings:
    api_key: str = field(repr=False)
    signing_key: SigningKey = field(repr=False)
    domain: str
    base_url: str
    profile_keys_file: str
    twitter_api_key: str | None = field(repr=False, default=None)
    twitter_api_secret: str | None = field(repr=False, default=None)
    default_allowed_social: tuple[str, ...] = ()
    default_redirect: str | None = None
    expires_in_minutes: int | None = None
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    deadline_seconds: float = 20.0
    redis_url: str | None = field(repr=False, default=None)  # may carry a password
    redis_timeout: float = 0.25
    connect_auth: tuple[str, ...] = ("signed",)
    signing_secret: str | None = field(repr=False, default=None)
    signed_link_max_ttl: int = 86400
    internal_api_token: str | None = field(repr=False, default=None)
    link_min_remaining: int = 60
    link_stale_min: int = 15
    link_allowed_hosts: tuple[str, ...] = ("profile.ayrshare.com",)
    trusted_proxy_count: int = 0
    log_level: str = "INFO"
    demo: bool = False

    def secrets(self) -> list[str]:
        """Every secret value, for the log redactor and for tests that prove none leaks."""
        values = [
            self.api_key,
            self.signing_key.pem,
            self.signing_secret,
            self.internal_api_token,
            self.twitter_api_key,
            self.twitter_api_secret,
        ]
        return [value for value in values if value]


def read_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The process environment over the `.env` file (the environment wins, as with docker/compose)."""
    if environ is not None:
        return dict(environ)
    merged = {}
    env_file = Path(os.environ.get("ENV_FILE", ".env"))
    if env_file.is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return merged


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    raw = _resolve_secret_files(read_environment(environ))
    raw = {name: value for name, value in raw.items() if value != ""}  # an empty setting counts as unset
    try:
        data = _SettingsSchema().load(raw)
    except ValidationError as error:
        raise ConfigError(_first_problem(error.normalized_messages())) from None
    try:
        signing_key = load_signing_key(data.pop("private_key"))
    except KeyFormatError as error:
        raise ConfigError(f"AYRSHARE_PRIVATE_KEY: {error}") from None
    _check_profile_keys_file(data["profile_keys_file"])
    for name in ("default_allowed_social", "connect_auth", "link_allowed_hosts"):
        data[name] = tuple(data[name])
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


def _check_profile_keys_file(path: str) -> None:
    # Loaded for real by the profile directory; checked here so a typo stops the start with the setting's name.
    if not Path(path).is_file():
        raise ConfigError("PROFILE_KEYS_FILE: no such file")
