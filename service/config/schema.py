"""The settings schema: every environment variable's name, type, default and validation rule.

`SettingsSchema` is a marshmallow schema whose data keys are the environment variable names and whose attribute names
are the fields of `Settings`. Cross-setting rules live in `_check_combinations` and, for the security settings, in
`checks.py`. Messages name what to fix and never echo a value.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from ..urls import is_bare_origin
from . import checks
from .connections import database_url_problem, redis_url_problem

AUTH_MODES = ("signed", "jwt", "header", "none")
LINK_FLOWS = ("session", "jwt")
METRICS_ON_MAIN_PORT = "main"  # METRICS_BIND value: /metrics on the main port (BIND), as a plain route
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


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def _check_host_port(bind: str) -> None:
    if (
        not re.fullmatch(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]*):\d{1,5}", bind)
        or not 0 < int(bind.rpartition(":")[2]) < 65536
    ):
        raise ValidationError("must be host:port, e.g. 0.0.0.0:9100")


PROFILE_CREATE_FIELDS = frozenset(
    {"messagingActive", "hideTopHeader", "topHeader", "subHeader", "disableSocial", "team", "email", "tags"}
)


def _standard_webhooks_secret(value: str) -> bool:
    if not value.startswith("whsec_"):
        return False
    try:
        return len(base64.b64decode(value[6:], validate=True)) >= 24
    except (binascii.Error, ValueError):
        return False


def _json_object(value: str) -> dict:
    try:
        parsed = json.loads(value)
    except ValueError:
        raise ValidationError('must be a JSON object, e.g. {"hideTopHeader": true}') from None
    if not isinstance(parsed, dict):
        raise ValidationError('must be a JSON object, e.g. {"hideTopHeader": true}')
    unknown = sorted(set(parsed) - PROFILE_CREATE_FIELDS)
    if unknown:
        raise ValidationError(
            f"unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(PROFILE_CREATE_FIELDS))}"
        )
    return parsed


def _check_metrics_bind(value: str) -> None:
    if value != METRICS_ON_MAIN_PORT:
        try:
            _check_host_port(value)
        except ValidationError:
            raise ValidationError(f"must be host:port, e.g. 0.0.0.0:9100, or {METRICS_ON_MAIN_PORT}") from None


class _CommaList(fields.Field):
    def __init__(self, *args: Any, lower: bool = True, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lower = lower

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not isinstance(value, str):
            raise ValidationError("must be a comma-separated list")
        return [item.lower() if self.lower else item for item in _csv(value)]


class SettingsSchema(Schema):
    """Environment variable names are the schema's data keys; attribute names are the Settings fields."""

    class Meta:
        unknown = EXCLUDE

    api_key = fields.String(data_key="AYRSHARE_API_KEY", required=True, validate=validate.Length(min=1))
    # "session" (Link Sessions, the default): no private key, revocable. "jwt" (generateJWT): needs the private key.
    link_flow = fields.String(
        data_key="AYRSHARE_LINK_FLOW", load_default="session", validate=validate.OneOf(LINK_FLOWS)
    )
    private_key = fields.String(data_key="AYRSHARE_PRIVATE_KEY", load_default=None, validate=validate.Length(min=1))
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
    # The whole /connect request: waiting for another caller's fetch (up to the lock's TTL) plus our own call.
    request_deadline_seconds = fields.Float(
        data_key="REQUEST_DEADLINE_SECONDS", load_default=30.0, validate=validate.Range(1, 60)
    )

    circuit_threshold = fields.Integer(
        data_key="CIRCUIT_FAILURE_THRESHOLD", load_default=5, validate=validate.Range(1, 1000)
    )
    circuit_cooldown = fields.Float(
        data_key="CIRCUIT_COOLDOWN_SECONDS", load_default=10.0, validate=validate.Range(0.1, 600)
    )

    redis_url = fields.String(data_key="REDIS_URL", load_default=None)
    redis_timeout = fields.Float(data_key="REDIS_TIMEOUT", load_default=0.25, validate=validate.Range(0.01, 5))
    # -- the directory of users and their profiles ------------------------------------------------------------
    # A read-only JSON file of users (GitOps); the database holds everyone else. For a user in both, the file wins.
    profile_keys_file = fields.String(data_key="PROFILE_KEYS_FILE", load_default=None)
    data_dir = fields.String(data_key="DATA_DIR", load_default="data", validate=validate.Length(min=1))
    database_url = fields.String(data_key="DATABASE_URL", load_default=None)
    database_migrate_on_start = fields.Boolean(data_key="DATABASE_MIGRATE_ON_START", load_default=None)
    data_encryption_key = fields.String(data_key="DATA_ENCRYPTION_KEY", load_default=None)
    profile_auto_create = fields.Boolean(data_key="PROFILE_AUTO_CREATE", load_default=False)
    profile_title_template = fields.String(
        data_key="PROFILE_TITLE_TEMPLATE", load_default="{user}", validate=validate.Length(1, 200)
    )
    # Fixed fields sent with every profile Ayrshare creates for us, as a JSON object (e.g. {"hideTopHeader": true}).
    profile_create_fields = fields.Function(
        deserialize=lambda value: _json_object(value), data_key="PROFILE_CREATE_FIELDS", load_default=dict
    )
    profile_create_max_per_hour = fields.Integer(
        data_key="PROFILE_CREATE_MAX_PER_HOUR", load_default=100, validate=validate.Range(1, 100_000)
    )
    # -- webhooks: Ayrshare's in, the team's out --------------------------------------------------------------
    webhook_secrets = _CommaList(data_key="AYRSHARE_WEBHOOK_SECRET", load_default=list, lower=False)
    webhook_tolerance_seconds = fields.Integer(
        data_key="WEBHOOK_TOLERANCE_SECONDS", load_default=300, validate=validate.Range(10, 3600)
    )
    public_base_url = fields.Url(data_key="PUBLIC_BASE_URL", load_default=None, require_tld=False)
    webhook_forward_url = fields.Url(data_key="WEBHOOK_FORWARD_URL", load_default=None, require_tld=False)
    webhook_forward_secret = fields.String(data_key="WEBHOOK_FORWARD_SECRET", load_default=None)
    webhook_forward_max_hours = fields.Float(
        data_key="WEBHOOK_FORWARD_MAX_HOURS", load_default=24.0, validate=validate.Range(0.01, 24 * 14)
    )
    # "thread": every instance delivers in a background thread (leases keep it once per event); "process": only
    # `flask webhooks deliver` does (compose/Kubernetes run it as its own container).
    webhook_delivery = fields.String(
        data_key="WEBHOOK_DELIVERY", load_default="thread", validate=validate.OneOf(["thread", "process"])
    )
    accounts_cache_seconds = fields.Integer(
        data_key="ACCOUNTS_CACHE_SECONDS", load_default=30, validate=validate.Range(0, 86400)
    )

    connect_auth = _CommaList(data_key="CONNECT_AUTH", load_default=lambda: ["signed"])
    signing_secret = fields.String(data_key="CONNECT_SIGNING_SECRET", load_default=None)
    # A signed link is rendered into a page and clicked within minutes; each extra hour is an hour a leaked one works.
    signed_link_max_ttl = fields.Integer(
        data_key="SIGNED_LINK_MAX_TTL_SECONDS", load_default=900, validate=validate.Range(10, 30 * 86400)
    )
    internal_api_token = fields.String(data_key="INTERNAL_API_TOKEN", load_default=None)

    link_min_remaining = fields.Integer(
        data_key="LINK_MIN_REMAINING_SECONDS", load_default=60, validate=validate.Range(0, 86400)
    )
    link_stale_min = fields.Integer(data_key="LINK_STALE_MIN_SECONDS", load_default=15, validate=validate.Range(0))
    link_allowed_hosts = _CommaList(data_key="LINK_ALLOWED_HOSTS", load_default=lambda: ["profile.ayrshare.com"])

    trusted_proxy_count = fields.Integer(data_key="TRUSTED_PROXY_COUNT", load_default=0, validate=validate.Range(0, 5))
    # -- caller identity, redirects, CORS, rate limits, cache encryption: checked by checks.check() ----------------
    jwt_jwks_url = fields.Url(data_key="JWT_JWKS_URL", load_default=None, require_tld=False)
    jwt_public_key = fields.String(data_key="JWT_PUBLIC_KEY", load_default=None)
    jwt_hs256_secret = fields.String(data_key="JWT_HS256_SECRET", load_default=None)
    jwt_algorithms = fields.Function(
        deserialize=lambda value: [item.upper() if item.lower() != "eddsa" else "EdDSA" for item in _csv(value)],
        data_key="JWT_ALGORITHMS",
        load_default=list,
    )
    jwt_issuer = fields.String(data_key="JWT_ISSUER", load_default=None)
    jwt_audience = fields.String(data_key="JWT_AUDIENCE", load_default=None)
    jwt_user_claim = fields.String(data_key="JWT_USER_CLAIM", load_default="sub", validate=validate.Length(1, 64))
    jwt_cookie = fields.String(data_key="JWT_COOKIE", load_default=None)
    jwt_leeway = fields.Integer(data_key="JWT_LEEWAY_SECONDS", load_default=30, validate=validate.Range(0, 300))
    trusted_proxies = _CommaList(data_key="TRUSTED_PROXIES", load_default=list)
    auth_user_header = fields.String(data_key="AUTH_USER_HEADER", load_default="X-Forwarded-User")
    redirect_allowed_hosts = _CommaList(data_key="REDIRECT_ALLOWED_HOSTS", load_default=list)
    cors_allowed_origins = _CommaList(data_key="CORS_ALLOWED_ORIGINS", load_default=list)
    rate_limit_enabled = fields.Boolean(data_key="RATE_LIMIT_ENABLED", load_default=True)
    rate_limit_per_address = fields.String(data_key="RATE_LIMIT_PER_ADDRESS", load_default="120/minute")
    rate_limit_per_user = fields.String(data_key="RATE_LIMIT_PER_USER", load_default="30/minute")
    rate_limit_upstream_per_user = fields.String(
        data_key="RATE_LIMIT_UPSTREAM_PER_USER", load_default="10 per 5 minutes"
    )
    # Every Ayrshare call for a new link, whoever it is for, across instances: a bound on what one account can spend.
    rate_limit_upstream_global = fields.String(data_key="RATE_LIMIT_UPSTREAM_GLOBAL", load_default="300 per 5 minutes")
    connect_email_per_user = fields.String(data_key="CONNECT_EMAIL_PER_USER", load_default="3 per hour")
    # Defaults for the Connect Accounts email's optional fields (Ayrshare needs them all for the email to go out).
    connect_email_contact = fields.Email(data_key="CONNECT_EMAIL_CONTACT_EMAIL", load_default=None)
    connect_email_company = fields.String(
        data_key="CONNECT_EMAIL_COMPANY", load_default=None, validate=validate.Length(1, 200)
    )
    connect_email_terms_url = fields.Url(data_key="CONNECT_EMAIL_TERMS_URL", load_default=None, schemes={"https"})
    connect_email_privacy_url = fields.Url(data_key="CONNECT_EMAIL_PRIVACY_URL", load_default=None, schemes={"https"})
    cache_encryption_key = fields.String(data_key="CACHE_ENCRYPTION_KEY", load_default=None)
    log_level = fields.Function(
        deserialize=lambda value: value.upper(),
        data_key="LOG_LEVEL",
        load_default="INFO",
        validate=validate.OneOf(["DEBUG", "INFO", "WARNING", "ERROR"]),
    )
    demo = fields.Boolean(data_key="DEMO_MODE", load_default=False)
    # Origins of the team's frontend(s): the only ones the done/error pages report to with postMessage, and the
    # only ones the done page sends a same-tab user back to. The service's own origin is always allowed.
    frontend_origins = _CommaList(data_key="FRONTEND_ORIGINS", load_default=list)
    # Where /metrics is served: host:port of a listener in gunicorn's master, off the public port (scrapes cost the
    # workers nothing and upstream outcomes stay private), or "main" for /metrics on the main port.
    metrics_bind = fields.String(data_key="METRICS_BIND", load_default="0.0.0.0:9100", validate=_check_metrics_bind)

    # -- gunicorn (read by config/gunicorn.conf.py; command-line flags override them) ---------------------------
    # BIND and GUNICORN_WORKERS win; else the platform conventions PORT (Cloud Run, Heroku, Render: listen on all
    # interfaces there) and WEB_CONCURRENCY (Heroku's, and gunicorn's own); else 0.0.0.0:8000 and 2 (load_settings).
    bind = fields.String(data_key="BIND", load_default=None, validate=validate.Length(min=1))
    port = fields.Integer(data_key="PORT", load_default=None, validate=validate.Range(1, 65535))
    worker_class = fields.String(
        data_key="GUNICORN_WORKER_CLASS", load_default="gthread", validate=validate.OneOf(["gthread", "gevent", "sync"])
    )
    workers = fields.Integer(data_key="GUNICORN_WORKERS", load_default=None, validate=validate.Range(1, 64))
    web_concurrency = fields.Integer(data_key="WEB_CONCURRENCY", load_default=None, validate=validate.Range(1, 64))
    # Each thread holds one request; a slow Ayrshare call holds its thread for up to AYRSHARE_DEADLINE_SECONDS.
    threads = fields.Integer(data_key="GUNICORN_THREADS", load_default=128, validate=validate.Range(1, 1024))
    worker_connections = fields.Integer(
        data_key="GUNICORN_WORKER_CONNECTIONS", load_default=1000, validate=validate.Range(1, 100_000)
    )
    worker_timeout = fields.Integer(data_key="GUNICORN_TIMEOUT", load_default=75, validate=validate.Range(1, 3600))
    graceful_timeout = fields.Integer(
        data_key="GUNICORN_GRACEFUL_TIMEOUT", load_default=30, validate=validate.Range(1, 3600)
    )
    keepalive = fields.Integer(data_key="GUNICORN_KEEPALIVE", load_default=5, validate=validate.Range(0, 3600))
    backlog = fields.Integer(data_key="GUNICORN_BACKLOG", load_default=2048, validate=validate.Range(1, 65535))
    access_log = fields.Boolean(data_key="GUNICORN_ACCESS_LOG", load_default=False)
    forwarded_allow_ips = fields.String(data_key="FORWARDED_ALLOW_IPS", load_default="127.0.0.1")

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
        if data["link_flow"] == "jwt" and not data.get("private_key"):
            raise ValidationError("is required when AYRSHARE_LINK_FLOW=jwt", "AYRSHARE_PRIVATE_KEY")
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
        expires_in = data.get("expires_in_minutes")
        if expires_in is not None and expires_in * 60 <= data["link_min_remaining"]:
            raise ValidationError(
                "links would expire before LINK_MIN_REMAINING_SECONDS; use a longer lifetime", "AYRSHARE_EXPIRES_IN"
            )
        if data["request_deadline_seconds"] < data["deadline_seconds"]:
            raise ValidationError("must be at least AYRSHARE_DEADLINE_SECONDS", "REQUEST_DEADLINE_SECONDS")
        if data["connect_timeout"] >= data["deadline_seconds"]:
            raise ValidationError("must be shorter than AYRSHARE_DEADLINE_SECONDS", "AYRSHARE_CONNECT_TIMEOUT")
        if data["link_stale_min"] > data["link_min_remaining"]:
            raise ValidationError("must not exceed LINK_MIN_REMAINING_SECONDS", "LINK_STALE_MIN_SECONDS")
        redis_problem = data["redis_url"] and redis_url_problem(data["redis_url"])
        if redis_problem:
            raise ValidationError(redis_problem, "REDIS_URL")
        not_origins = [value for value in data["frontend_origins"] if not is_bare_origin(value)]
        if not_origins:
            raise ValidationError(
                "must be a comma-separated list of origins like https://app.example.com", "FRONTEND_ORIGINS"
            )
        database_problem = data["database_url"] and database_url_problem(data["database_url"])
        if database_problem:
            raise ValidationError(database_problem, "DATABASE_URL")
        template = data["profile_title_template"]
        if "{user}" not in template or template.replace("{user}", "").count("{") + template.count("}") > 1:
            raise ValidationError("must contain {user} and no other {placeholder}", "PROFILE_TITLE_TEMPLATE")
        forward_secret = data.get("webhook_forward_secret")
        if data["webhook_forward_url"] and not forward_secret:
            raise ValidationError("is required when WEBHOOK_FORWARD_URL is set", "WEBHOOK_FORWARD_SECRET")
        if forward_secret and not _standard_webhooks_secret(forward_secret):
            raise ValidationError(
                "must be whsec_ followed by base64 of at least 24 random bytes "
                "(python -c 'import base64,os; print(\"whsec_\" + base64.b64encode(os.urandom(32)).decode())')",
                "WEBHOOK_FORWARD_SECRET",
            )
        if any(len(secret) < 16 for secret in data["webhook_secrets"]):
            raise ValidationError("each secret must be at least 16 characters", "AYRSHARE_WEBHOOK_SECRET")
        checks.check(data)


# A variable starting with one of these that is no setting (nor listed below) stops the start: it is a typo, or a
# setting of another version. Broad words other software also uses (LOG_, REQUEST_, TRUSTED_) are left out.
SETTING_PREFIXES = (
    "AYRSHARE_",
    "CONNECT_",
    "REDIS_",
    "DATABASE_",
    "DATA_",
    "PROFILE_",
    "LINK_",
    "SIGNED_LINK_",
    "JWT_",
    "RATE_LIMIT_",
    "CIRCUIT_",
    "CACHE_",
    "GUNICORN_",
    "WEBHOOK_",
)
# Variables with those prefixes that are not the service's settings: read by docker-compose.yml (host paths of the
# secrets, the Redis container's memory cap), by gunicorn itself, or by the project's scripts.
NOT_SETTINGS = frozenset(
    {
        "AYRSHARE_SHARED_DIR",  # scripts/container-engine.sh
        "AYRSHARE_API_KEY_SECRET",
        "AYRSHARE_PRIVATE_KEY_SECRET",
        "DATABASE_URL_SECRET",
        "DATA_ENCRYPTION_KEY_SECRET",
        "REDIS_PASSWORD_SECRET",
        "REDIS_URL_SECRET",
        "REDIS_MAXMEMORY",
        "PROFILE_KEYS_HOST_FILE",
        "GUNICORN_CMD_ARGS",
    }
)


def setting_names() -> list[str]:
    """Every environment variable the schema reads (its data keys), so a setting added to it is known at once."""
    return sorted(field.data_key or name for name, field in SettingsSchema().fields.items())
