"""Start-up refuses unsafe security settings with one line naming the setting (never its value), and warns at every
start about each setting that weakens a safe default."""

from __future__ import annotations

import json

import pytest

from service import ConfigError, create_app

HS = "JWT-HS-SECRET-e4c1b0a9f8d7e6c5b4a3f2e1d0c9b8a7"
JWT_OK = {"CONNECT_AUTH": "jwt", "JWT_HS256_SECRET": HS, "JWT_ISSUER": "https://id.example.com/", "JWT_AUDIENCE": "c"}

# (why, overrides, setting named in the error)
REFUSED = [
    ("unknown auth mode", {"CONNECT_AUTH": "signed,magic"}, "CONNECT_AUTH"),
    ("header mode without trusted proxies", {"CONNECT_AUTH": "header"}, "TRUSTED_PROXIES"),
    ("trusted proxy not a CIDR", {"CONNECT_AUTH": "header", "TRUSTED_PROXIES": "10.0.0.0/33"}, "TRUSTED_PROXIES"),
    ("user header not a header name", {"AUTH_USER_HEADER": "X User: me"}, "AUTH_USER_HEADER"),
    ("jwt without a key", {"CONNECT_AUTH": "jwt", "JWT_ISSUER": "i", "JWT_AUDIENCE": "a"}, "JWT_JWKS_URL"),
    ("jwt with two keys", {**JWT_OK, "JWT_JWKS_URL": "https://id.example.com/jwks"}, "JWT_JWKS_URL"),
    ("jwt alg none", {**JWT_OK, "JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
    ("jwt HMAC secret with RSA alg", {**JWT_OK, "JWT_ALGORITHMS": "RS256"}, "JWT_ALGORITHMS"),
    ("jwt mixed families", {**JWT_OK, "JWT_ALGORITHMS": "HS256,RS256"}, "JWT_ALGORITHMS"),
    ("jwt short secret", {**JWT_OK, "JWT_HS256_SECRET": "short-secret"}, "JWT_HS256_SECRET"),
    ("jwt without issuer", {**JWT_OK, "JWT_ISSUER": ""}, "JWT_ISSUER"),
    ("jwt without audience", {**JWT_OK, "JWT_AUDIENCE": ""}, "JWT_AUDIENCE"),
    (
        "jwt public key not PEM",
        {**JWT_OK, "JWT_HS256_SECRET": "", "JWT_PUBLIC_KEY": "PEM-BODY-NOT-A-KEY"},
        "JWT_PUBLIC_KEY",
    ),
    (
        "jwks over plain http",
        {**JWT_OK, "JWT_HS256_SECRET": "", "JWT_JWKS_URL": "http://id.example.com/jwks"},
        "JWT_JWKS_URL",
    ),
    ("jwt cookie name with spaces", {**JWT_OK, "JWT_COOKIE": "my session"}, "JWT_COOKIE"),
    ("redirect entry with a path", {"REDIRECT_ALLOWED_HOSTS": "app.example.com/done"}, "REDIRECT_ALLOWED_HOSTS"),
    (
        "redirect entry plain http public",
        {"REDIRECT_ALLOWED_HOSTS": "http://app.example.com"},
        "REDIRECT_ALLOWED_HOSTS",
    ),
    ("redirect entry wildcard", {"REDIRECT_ALLOWED_HOSTS": "*.example.com"}, "REDIRECT_ALLOWED_HOSTS"),
    ("default redirect plain http public", {"AYRSHARE_REDIRECT": "http://app.example.com/done"}, "AYRSHARE_REDIRECT"),
    ("default redirect with userinfo", {"AYRSHARE_REDIRECT": "https://a@app.example.com/done"}, "AYRSHARE_REDIRECT"),
    ("cors wildcard", {"CORS_ALLOWED_ORIGINS": "*"}, "CORS_ALLOWED_ORIGINS"),
    ("bad rate limit", {"RATE_LIMIT_PER_USER": "lots"}, "RATE_LIMIT_PER_USER"),
    ("bad upstream rate limit", {"RATE_LIMIT_UPSTREAM_PER_USER": "10 per fortnight"}, "RATE_LIMIT_UPSTREAM_PER_USER"),
    ("bad global upstream limit", {"RATE_LIMIT_UPSTREAM_GLOBAL": "500 per fortnight"}, "RATE_LIMIT_UPSTREAM_GLOBAL"),
    ("bad address rate limit", {"RATE_LIMIT_PER_ADDRESS": "many per minute"}, "RATE_LIMIT_PER_ADDRESS"),
    ("bad email limit", {"CONNECT_EMAIL_PER_USER": "3 per fortnight"}, "CONNECT_EMAIL_PER_USER"),
    ("bad encryption key", {"CACHE_ENCRYPTION_KEY": "CACHE-KEY-NOT-FERNET"}, "CACHE_ENCRYPTION_KEY"),
    ("too many trusted proxies", {"TRUSTED_PROXY_COUNT": "9"}, "TRUSTED_PROXY_COUNT"),
]


@pytest.mark.parametrize(("case", "overrides", "setting"), REFUSED, ids=[c[0] for c in REFUSED])
def test_unsafe_settings_stop_the_start_with_one_line(settings_env, case, overrides, setting):
    with pytest.raises(ConfigError) as caught:
        create_app({**settings_env, **overrides})
    message = str(caught.value)
    assert message.startswith(f"{setting}:") and "\n" not in message
    for value in overrides.values():
        if len(value) > 6:
            assert value not in message


def test_safe_security_settings_start(settings_env, keypair):
    env = {
        **settings_env,
        "CONNECT_AUTH": "signed,jwt,header",
        "JWT_PUBLIC_KEY": keypair["public_pem"].replace("\n", "\\n"),  # literal \n escapes, as env vars often hold
        "JWT_ISSUER": "https://id.example.com/",
        "JWT_AUDIENCE": "connect",
        "JWT_ALGORITHMS": "rs256,ps256",
        "TRUSTED_PROXIES": "10.0.0.0/24,::1",
        "REDIRECT_ALLOWED_HOSTS": "app.example.com,.example.org,http://127.0.0.1:8000",
        "AYRSHARE_REDIRECT": "http://127.0.0.1:8000/done",
        "CORS_ALLOWED_ORIGINS": "https://app.example.com",
    }
    settings = create_app(env).config["SETTINGS"]
    assert settings.jwt_algorithms == ("RS256", "PS256")
    assert settings.connect_auth == ("signed", "jwt", "header")


WEAKENING = [
    ({"CONNECT_AUTH": "none"}, "CONNECT_AUTH includes 'none'"),
    ({"CONNECT_AUTH": "header", "TRUSTED_PROXIES": "10.0.0.0/8"}, "larger than /24"),
    ({"TRUSTED_PROXY_COUNT": "1"}, "TRUSTED_PROXY_COUNT"),
    ({"AYRSHARE_REDIRECT": "http://127.0.0.1:8000/done"}, "AYRSHARE_REDIRECT uses plain http"),
    ({"REDIRECT_ALLOWED_HOSTS": "http://127.0.0.1:8000"}, "REDIRECT_ALLOWED_HOSTS allows plain http"),
    ({"REDIRECT_ALLOWED_HOSTS": ".example.com"}, "every subdomain is trusted"),
    ({"CORS_ALLOWED_ORIGINS": "http://localhost:5173"}, "CORS_ALLOWED_ORIGINS lists plain http"),
    ({"RATE_LIMIT_ENABLED": "0"}, "RATE_LIMIT_ENABLED is off"),
    ({"SIGNED_LINK_MAX_TTL_SECONDS": "604800"}, "SIGNED_LINK_MAX_TTL_SECONDS"),
    ({**JWT_OK, "JWT_LEEWAY_SECONDS": "120"}, "JWT_LEEWAY_SECONDS"),
    ({"REDIS_URL": "redis://cache.internal.example:6379/0"}, "without TLS"),
    ({"DEMO_MODE": "1"}, "DEMO_MODE"),
    ({"GUNICORN_WORKER_CLASS": "sync"}, "GUNICORN_WORKER_CLASS=sync"),
]


@pytest.mark.parametrize(("overrides", "expected"), WEAKENING, ids=[w[1] for w in WEAKENING])
def test_every_weakened_setting_is_a_startup_warning(settings_env, capsys, overrides, expected):
    create_app(settings_env)
    baseline = _warnings(capsys)
    assert expected not in baseline
    create_app({**settings_env, **overrides})
    assert expected in _warnings(capsys)


def _warnings(capsys) -> str:
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    return "\n".join(line["msg"] for line in lines if line["level"] == "warning")


# A trailing dot (the fully qualified form) and upper case name the same host to DNS.
@pytest.mark.parametrize(
    "base_url",
    ["https://api.ayrshare.com/api", "https://api.ayrshare.com./api", "https://API.AYRSHARE.COM./api"],
)
def test_demo_mode_refuses_to_front_the_real_ayrshare(settings_env, base_url):
    from service.config import ConfigError, load_settings

    env = {
        **settings_env,
        "DEMO_MODE": "1",
        "AYRSHARE_BASE_URL": base_url,
        "LINK_ALLOWED_HOSTS": "profile.ayrshare.com",
    }
    with pytest.raises(ConfigError, match=r"^DEMO_MODE: "):
        load_settings(env)


@pytest.mark.parametrize("entry", ["http://profile.ayrshare.com", "http://10.0.0.5:8080", "ftp://profile.ayrshare.com"])
def test_plain_http_linking_hosts_are_only_for_loopback(settings_env, entry):
    from service.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match=r"^LINK_ALLOWED_HOSTS: "):
        load_settings({**settings_env, "LINK_ALLOWED_HOSTS": entry})
