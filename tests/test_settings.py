"""Configuration: every bad setting stops the start with one line naming it, never its value."""

from __future__ import annotations

import base64
import re
import subprocess
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import pytest

from service.config import ConfigError, load_settings
from service.config.keys import load_signing_key
from tests.conftest import API_KEY, DATA_KEY, SIGNING_SECRET
from tests.support.processes import ServiceProcess


@pytest.fixture
def env(keypair, profiles_file) -> dict[str, str]:
    # The jwt flow, so the private key's checks are exercised; tests of the default flow remove the two settings.
    return {
        "AYRSHARE_LINK_FLOW": "jwt",
        "AYRSHARE_API_KEY": API_KEY,
        "AYRSHARE_PRIVATE_KEY": keypair["private_pem"],
        "AYRSHARE_DOMAIN": "ACME",
        "PROFILE_KEYS_FILE": str(profiles_file),
        "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
        "DATA_ENCRYPTION_KEY": DATA_KEY,
    }


def test_a_complete_configuration_loads_with_documented_defaults(env):
    settings = load_settings(env)
    assert settings.base_url == "https://api.ayrshare.com/api"
    assert settings.connect_auth == ("signed",)
    assert settings.link_min_remaining == 60
    assert settings.link_allowed_hosts == ("profile.ayrshare.com",)
    assert settings.redis_url is None


def test_the_session_flow_is_the_default_and_needs_no_private_key(env):
    del env["AYRSHARE_LINK_FLOW"], env["AYRSHARE_PRIVATE_KEY"]
    settings = load_settings(env)
    assert settings.link_flow == "session" and settings.signing_key is None


def test_the_jwt_flow_without_a_private_key_names_the_missing_setting(env):
    del env["AYRSHARE_PRIVATE_KEY"]
    with pytest.raises(ConfigError, match=r"^AYRSHARE_PRIVATE_KEY: is required when AYRSHARE_LINK_FLOW=jwt$"):
        load_settings(env)


def test_the_jwt_flow_warns_at_every_start_that_links_expose_the_api_key(env):
    from service.config.checks import weakened_settings

    jwt_warnings = [w for w in weakened_settings(load_settings(env)) if "AYRSHARE_LINK_FLOW=jwt" in w]
    assert len(jwt_warnings) == 1 and "API key" in jwt_warnings[0]
    del env["AYRSHARE_LINK_FLOW"]
    assert not [w for w in weakened_settings(load_settings(env)) if "LINK_FLOW" in w]


# (setting changed, value or None to remove it, the setting the error must name)
BAD_SETTINGS = [
    ("AYRSHARE_API_KEY", None, "AYRSHARE_API_KEY"),
    ("AYRSHARE_PRIVATE_KEY", None, "AYRSHARE_PRIVATE_KEY"),
    ("AYRSHARE_PRIVATE_KEY", "not-a-key-SECRETVALUE", "AYRSHARE_PRIVATE_KEY"),
    (
        "AYRSHARE_PRIVATE_KEY",
        "-----BEGIN RSA PRIVATE KEY-----\nAAAASECRETVALUE\n-----END RSA PRIVATE KEY-----",
        "AYRSHARE_PRIVATE_KEY",
    ),
    ("AYRSHARE_DOMAIN", None, "AYRSHARE_DOMAIN"),
    ("AYRSHARE_LINK_FLOW", "oauth-SECRETVALUE", "AYRSHARE_LINK_FLOW"),
    ("CONNECT_EMAIL_PER_USER", "lots-SECRETVALUE", "CONNECT_EMAIL_PER_USER"),
    ("CONNECT_EMAIL_TERMS_URL", "http://example.com/SECRETVALUE", "CONNECT_EMAIL_TERMS_URL"),
    ("CONNECT_EMAIL_CONTACT_EMAIL", "SECRETVALUE", "CONNECT_EMAIL_CONTACT_EMAIL"),
    ("AYRSHARE_BASE_URL", "ftp//nope SECRETVALUE", "AYRSHARE_BASE_URL"),
    ("PROFILE_KEYS_FILE", "/nonexistent/SECRETVALUE.json", "PROFILE_KEYS_FILE"),
    ("CONNECT_AUTH", "signed,SECRETVALUE", "CONNECT_AUTH"),
    ("CONNECT_SIGNING_SECRET", None, "CONNECT_SIGNING_SECRET"),
    ("CONNECT_SIGNING_SECRET", "short-SECRETVALUE", "CONNECT_SIGNING_SECRET"),
    ("INTERNAL_API_TOKEN", "SECRETVALUE", "INTERNAL_API_TOKEN"),
    ("LINK_MIN_REMAINING_SECONDS", "sixty-SECRETVALUE", "LINK_MIN_REMAINING_SECONDS"),
    ("LINK_MIN_REMAINING_SECONDS", "-1", "LINK_MIN_REMAINING_SECONDS"),
    ("AYRSHARE_EXPIRES_IN", "0", "AYRSHARE_EXPIRES_IN"),
    ("AYRSHARE_EXPIRES_IN", "2881", "AYRSHARE_EXPIRES_IN"),
    ("AYRSHARE_EXPIRES_IN", "1", "AYRSHARE_EXPIRES_IN"),  # 60 s tokens never outlive the 60 s margin
    ("AYRSHARE_ALLOWED_SOCIAL", "facebook,SECRETVALUE", "AYRSHARE_ALLOWED_SOCIAL"),
    ("AYRSHARE_REDIRECT", "not a url SECRETVALUE", "AYRSHARE_REDIRECT"),
    ("AYRSHARE_TWITTER_API_KEY", "SECRETVALUE-twitter-key", "AYRSHARE_TWITTER_API_SECRET"),
    ("REDIS_URL", "http://SECRETVALUE@localhost:6379", "REDIS_URL"),
    ("REDIS_URL", "redis://:SECRETVALUE@127.0.0.1:notaport/0", "REDIS_URL"),
    ("REDIS_URL", "redis://:SECRETVALUE@[::1", "REDIS_URL"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0?socket_timeout=SECRETVALUE", "REDIS_URL"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0?SECRETVALUE=1", "REDIS_URL"),  # an option redis-py does not know
    ("REDIS_URL", "redis+sentinel://:SECRETVALUE@h1:26379,h2:badport/mymaster", "REDIS_URL"),
    ("REDIS_URL", "redis+sentinel://:SECRETVALUE@h1:26379", "REDIS_URL"),  # no master name
    ("REDIS_URL", "redis+cluster://:SECRETVALUE@[::1:7000", "REDIS_URL"),
    ("DATABASE_URL", "postgresql+psycopg://app:SECRETVALUE@db:abc/ayrshare", "DATABASE_URL"),
    ("DATABASE_URL", "postgresql+psycopg://app:pw@SECRETVALUE@db:5432/ayrshare", "DATABASE_URL"),  # a raw "@"
    ("DATABASE_URL", "sqlite:////etc/hostname/SECRETVALUE/directory.db", "DATABASE_URL"),  # under a file
    ("DATA_DIR", "/etc/hostname/SECRETVALUE", "DATA_DIR"),
    ("RATE_LIMIT_PER_USER", "0/minute", "RATE_LIMIT_PER_USER"),  # would refuse every request
    ("RATE_LIMIT_UPSTREAM_PER_USER", "10 per 0 minutes", "RATE_LIMIT_UPSTREAM_PER_USER"),  # `limits` reads 1 minute
    ("CONNECT_EMAIL_PER_USER", "3/hour;0/day", "CONNECT_EMAIL_PER_USER"),
    ("AYRSHARE_DEADLINE_SECONDS", "31", "AYRSHARE_DEADLINE_SECONDS"),
    ("LOG_LEVEL", "LOUD", "LOG_LEVEL"),
]


@pytest.mark.parametrize(
    ("name", "url"),
    [
        ("REDIS_URL", "rediss://:pw@redis.internal:6380/0?ssl_ca_certs=/run/secrets/redis-ca.pem"),
        ("REDIS_URL", "unix:///run/redis/redis.sock?db=2"),
        ("REDIS_URL", "redis+sentinel://:pw@[::1]:26379,[::2]/mymaster/1"),
        ("REDIS_URL", "redis+cluster://[::1]"),
        ("REDIS_URL", "redis://:p@ss@redis:6379/0"),  # redis-py reads the password up to the last "@"
        ("DATABASE_URL", "postgresql+psycopg://app:pw@/ayrshare?host=/run/postgresql"),
        ("DATABASE_URL", "postgresql+psycopg://app:pw@/ayrshare?host=db-a:5432&host=db-b:5432"),
        ("DATABASE_URL", "sqlite:///:memory:"),
        ("DATABASE_URL", "sqlite:///relative/directory.db"),
    ],
)
def test_well_formed_connection_urls_are_accepted(env, name, url):
    assert getattr(load_settings({**env, name: url}), name.lower()) == url


@pytest.mark.parametrize(("name", "value", "named"), BAD_SETTINGS, ids=[f"{c[0]}={c[1]!r:.20}" for c in BAD_SETTINGS])
def test_bad_settings_raise_one_line_naming_the_setting(env, name, value, named):
    if value is None:
        env.pop(name, None)
    else:
        env[name] = value
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    message = str(caught.value)
    assert message.startswith(named)
    assert "\n" not in message
    assert "SECRETVALUE" not in message and API_KEY not in message


def test_secret_files_are_read_and_exclusive_with_the_plain_setting(env, tmp_path):
    (tmp_path / "api-key").write_text(API_KEY + "\n")
    file_env = {**env, "AYRSHARE_API_KEY_FILE": str(tmp_path / "api-key")}
    del file_env["AYRSHARE_API_KEY"]
    assert load_settings(file_env).api_key == API_KEY

    with pytest.raises(ConfigError, match=r"^AYRSHARE_API_KEY: set either"):
        load_settings({**file_env, "AYRSHARE_API_KEY": "both"})
    with pytest.raises(ConfigError, match=r"^AYRSHARE_PRIVATE_KEY_FILE: cannot read"):
        load_settings({**env, "AYRSHARE_PRIVATE_KEY": "", "AYRSHARE_PRIVATE_KEY_FILE": str(tmp_path / "missing")})


def _mangled_keys(pem: str) -> dict[str, str]:
    one_line = pem.strip().replace("\n", " ")
    return {
        "as is": pem,
        "surrounding whitespace": f"\n\t  {pem}\n\n  ",
        "literal \\n escapes": pem.strip().replace("\n", "\\n"),
        "quoted with escapes": '"' + pem.strip().replace("\n", "\\n") + '"',
        "base64 of the PEM": base64.b64encode(pem.encode()).decode(),
        "base64 wrapped at 76": base64.encodebytes(pem.encode()).decode(),
        "newlines lost to spaces": one_line,
        "windows line endings": pem.replace("\n", "\r\n"),
        "body re-wrapped at 70": _rewrap(pem, 70),
    }


def _rewrap(pem: str, width: int) -> str:
    lines = pem.strip().splitlines()
    body = "".join(lines[1:-1])
    return "\n".join([lines[0], *[body[i : i + width] for i in range(0, len(body), width)], lines[-1]])


def test_private_key_in_every_common_mangled_form_loads_to_the_same_key(keypair):
    expected = load_signing_key(keypair["private_pem"]).public_key.public_numbers()
    for form, text in _mangled_keys(keypair["private_pem"]).items():
        key = load_signing_key(text)
        assert key.public_key.public_numbers() == expected, form
        assert key.pem.startswith("-----BEGIN RSA PRIVATE KEY-----\n"), form


def test_non_rsa_and_encrypted_keys_are_refused_with_a_reason():
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    ec_pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="not an RSA key"):
        load_signing_key(ec_pem.decode())
    encrypted = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    )
    with pytest.raises(ValueError, match="encrypted"):
        load_signing_key(encrypted.decode())


def test_dotenv_file_fills_in_what_the_environment_leaves_unset(env, tmp_path, monkeypatch):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"AYRSHARE_DOMAIN=FROM-DOTENV\nLINK_MIN_REMAINING_SECONDS=90\nAYRSHARE_API_KEY={API_KEY}\n")
    for name, value in env.items():
        if name != "AYRSHARE_API_KEY":
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("AYRSHARE_API_KEY", raising=False)
    monkeypatch.setenv("AYRSHARE_DOMAIN", "FROM-ENVIRONMENT")
    monkeypatch.setenv("ENV_FILE", str(dotenv))
    settings = load_settings()
    assert settings.domain == "FROM-ENVIRONMENT"  # the environment wins
    assert settings.link_min_remaining == 90 and settings.api_key == API_KEY


@pytest.mark.parametrize(("name", "value"), [("AYRSHARE_PRIVATE_KEY", "garbage-SECRETVALUE"), ("AYRSHARE_API_KEY", "")])
def test_gunicorn_refuses_to_start_with_one_clear_line(env, name, value):
    service = ServiceProcess({**env, name: value}, workers=2)
    service.start(wait=False)
    assert service.proc.wait(30) == 2
    output = service.log()
    service.stop()
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert lines == [lines[0]] and lines[0].startswith(f"configuration error: {name}")
    assert "SECRETVALUE" not in output and "Traceback" not in output


def test_check_config_cli_reports_ok_and_sign_url_prints_a_verifiable_link(env, tmp_path):
    from service.auth import check_signature

    environment = {
        **env,
        "ENV_FILE": "/nonexistent",
        "PATH": "/usr/bin:/bin",
        "REDIRECT_ALLOWED_HOSTS": "app.example.com",
    }
    flask = [str(ServiceProcess({}).command()[0]).replace("gunicorn", "flask"), "--app", "service"]
    ok = subprocess.run(
        [*flask, "check-config", "--offline"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert ok.returncode == 0 and "configuration ok" in ok.stdout

    signed = subprocess.run(
        [*flask, "sign-url", "alice", "--ttl", "120"], env=environment, capture_output=True, text=True, timeout=60
    )
    path, _, query = signed.stdout.strip().partition("?")
    params = dict(part.split("=") for part in query.split("&"))
    assert path == "/connect/alice"
    assert check_signature("alice", params, SIGNING_SECRET, max_ttl=3600, now=int(params["expires"]) - 120)

    options = ["--redirect", "https://app.example.com/done", "--allowed-social", "facebook,tiktok"]
    with_options = subprocess.run(
        [*flask, "sign-url", "alice", *options], env=environment, capture_output=True, text=True, timeout=60
    )
    assert with_options.returncode == 0, with_options.stderr
    params = dict(parse_qsl(urlsplit(with_options.stdout.strip()).query))
    assert params["redirect"] == "https://app.example.com/done" and params["allowedSocial"] == "facebook,tiktok"
    assert check_signature("alice", params, SIGNING_SECRET, max_ttl=900, now=int(params["expires"]) - 300)


def test_flask_cli_with_a_bad_setting_prints_one_line_and_exits_2(env):
    environment = {
        **env,
        "ENV_FILE": "/nonexistent",
        "PATH": "/usr/bin:/bin",
        "AYRSHARE_PRIVATE_KEY": "nope-SECRETVALUE",
    }
    flask = str(ServiceProcess({}).command()[0]).replace("gunicorn", "flask")
    result = subprocess.run(
        [flask, "--app", "service", "check-config"], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith("configuration error: AYRSHARE_PRIVATE_KEY")
    assert "SECRETVALUE" not in result.stderr + result.stdout


def test_redis_url_can_come_from_a_file_like_every_secret(env, tmp_path):
    # compose hands the URL, password included, to the service as a secret file.
    path = tmp_path / "redis_url"
    path.write_text("redis://:REDIS-PASSWORD-x1@redis:6379/0\n")
    environ = {name: value for name, value in env.items() if name != "REDIS_URL"}
    settings = load_settings({**environ, "REDIS_URL_FILE": str(path)})
    assert settings.redis_url == "redis://:REDIS-PASSWORD-x1@redis:6379/0"
    assert "REDIS-PASSWORD-x1" in settings.secrets()  # redacted from logs like every secret


@pytest.mark.parametrize(
    ("url", "password"),
    [
        ("postgresql+psycopg://app:s3cr#t?Pa/ss@db:5432/ayrshare", "s3cr#t?Pa/ss"),  # as SQLAlchemy reads it
        ("postgresql+psycopg://app:p%40ss%2Fw0rd-x@db/ayrshare", "p@ss/w0rd-x"),
        ("redis://:p%40ss-REDIS-x1@redis:6379/0", "p@ss-REDIS-x1"),
        ("redis://:Sup3r@pw-REDIS-x1@redis:6379/0", "Sup3r@pw-REDIS-x1"),  # redis-py reads up to the last "@"
    ],
)
def test_a_url_password_with_url_characters_is_redacted_whole_as_written_and_decoded(env, url, password):
    setting = "REDIS_URL" if url.startswith("redis") else "DATABASE_URL"
    secrets = load_settings({**env, setting: url}).secrets()
    assert password in secrets


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("AYRSHARE_DOMIAN", "AYRSHARE_DOMAIN"), ("REDIS_ULR", "REDIS_URL"), ("CONNECT_AUTHE", "CONNECT_AUTH")],
)
def test_an_unknown_setting_with_the_projects_prefix_stops_the_start_naming_the_closest_known_one(env, typo, meant):
    with pytest.raises(ConfigError) as raised:
        load_settings({**env, typo: "value-SECRETVALUE"})
    assert str(raised.value) == f"{typo}: not a setting of this service; did you mean {meant}?"


def test_an_unknown_setting_far_from_every_known_one_is_named_without_a_guess(env):
    with pytest.raises(ConfigError, match=r"^GUNICORN_ZZZZZZZZZZZZZZZZ: not a setting of this service \(see docs"):
        load_settings({**env, "GUNICORN_ZZZZZZZZZZZZZZZZ": "1"})


def test_secret_file_forms_other_prefixes_and_kubernetes_service_links_are_not_unknown(env, tmp_path):
    (tmp_path / "secret").write_text(SIGNING_SECRET)
    del env["CONNECT_SIGNING_SECRET"]
    load_settings(
        {
            **env,
            "CONNECT_SIGNING_SECRET_FILE": str(tmp_path / "secret"),
            "HOME": "/root",
            "SOMETHING_ELSE": "1",
            "GUNICORN_CMD_ARGS": "--log-level debug",  # gunicorn's own
            # What Kubernetes puts in every pod for each Service in the namespace (enableServiceLinks).
            "REDIS_SERVICE_HOST": "10.0.0.7",
            "REDIS_SERVICE_PORT": "6379",
            "REDIS_SERVICE_PORT_REDIS": "6379",
            "REDIS_PORT": "tcp://10.0.0.7:6379",
            "REDIS_PORT_6379_TCP": "tcp://10.0.0.7:6379",
            "REDIS_PORT_6379_TCP_ADDR": "10.0.0.7",
            "REDIS_PORT_6379_TCP_PORT": "6379",
            "REDIS_PORT_6379_TCP_PROTO": "tcp",
            "AYRSHARE_CONNECT_SERVICE_HOST": "10.0.0.8",
            "AYRSHARE_CONNECT_PORT": "tcp://10.0.0.8:80",
            "AYRSHARE_DOMIAN": "",  # empty counts as unset
        }
    )


def test_every_variable_of_the_compose_file_and_every_setting_of_the_example_is_known():
    from service.config.settings import unknown_setting

    root = Path(__file__).resolve().parents[1]
    compose = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", (root / "docker-compose.yml").read_text()))
    example = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", (root / ".env.example").read_text(), re.MULTILINE))
    assert {"REDIS_MAXMEMORY", "PROFILE_KEYS_HOST_FILE", "AYRSHARE_API_KEY_SECRET"} <= compose | example
    for name in sorted(compose | example):
        assert unknown_setting({name: "x"}) is None, name


def test_every_family_of_three_or_more_settings_has_its_prefix_checked():
    from service.config.schema import SETTING_PREFIXES, setting_names

    families: dict[str, list[str]] = {}
    for name in setting_names():
        families.setdefault(name.partition("_")[0], []).append(name)
    for word, names in families.items():
        if len(names) >= 3:
            assert any(all(n.startswith(p) for n in names) for p in SETTING_PREFIXES), (word, names)


def test_log_level_accepts_any_case(env):
    assert load_settings({**env, "LOG_LEVEL": "debug"}).log_level == "DEBUG"
    assert load_settings({**env, "LOG_LEVEL": "Warning"}).log_level == "WARNING"
    with pytest.raises(ConfigError, match=r"^LOG_LEVEL: "):
        load_settings({**env, "LOG_LEVEL": "loud"})


def test_gunicorn_refuses_an_unknown_setting_with_one_line(env):
    service = ServiceProcess({**env, "REDIS_ULR": "redis://127.0.0.1:6379/0"}, workers=2)
    service.start(wait=False)
    try:
        assert service.proc.wait(30) == 2
        output = service.log()
    finally:
        service.stop()
        service.remove_log()
    lines = [line for line in output.splitlines() if "configuration error" in line]
    assert lines == ["configuration error: REDIS_ULR: not a setting of this service; did you mean REDIS_URL?"]
