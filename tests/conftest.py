"""Shared fixtures: real redis-server, real Ayrshare emulator, a fresh RSA key, and the Flask `app`/`client`.

The suite starts its own throwaway redis-server on a free port unless `REDIS_URL` is set (then that Redis is
flushed between tests, so point it at a database the tests own). Likewise a throwaway PostgreSQL
(tests/support/postgres_proc.py), started only when a test first asks for `postgres_url` or `database_url[postgres]`,
unless `DATABASE_URL` is set. Every secret is a recognisable value so that
tests can prove none of them reaches a log line or a response body.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from pathlib import Path

import pytest
import redis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import settings as hypothesis_settings

from service import create_app
from tests.support.emulator_proc import EmulatorProcess
from tests.support.postgres_proc import PostgresServer
from tests.support.processes import RedisServer, ServiceProcess

# Property tests explore new random examples on every local run; CI (HYPOTHESIS_PROFILE=ci, set by .ci/run) replays a
# fixed derandomized set, so a red CI always means a change broke something, never that the dice rolled differently.
hypothesis_settings.register_profile("ci", derandomize=True)
hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

API_KEY = "API-KEY-SECRET-7Q2W9E4R-T6Y8U1I3"
SIGNING_SECRET = "SIGNING-SECRET-b8f3c1d9e0a24f6b9c7d5e3f1a2b4c6d"
INTERNAL_TOKEN = "INTERNAL-TOKEN-SECRET-5f1e9d3c7b2a"
DOMAIN = "ACME"
PROFILES = {"alice": "PK-ALICE-0001", "bob": "PK-BOB-0002", "carol@example.com": "PK-CAROL-0003"}
PROFILES.update({f"user{i}": f"PK-USER-{i:04d}" for i in range(40)})


def ayrshare_webhook_headers(
    body: bytes, secret: str, at: float | None = None, header: str = "X-Authorization-Content-SHA256"
) -> dict[str, str]:
    """Headers as Ayrshare signs a webhook delivery (see service/webhooks/signature.py): a timestamp and the body's
    hex HMAC-SHA256 under `secret`."""
    return {
        "Content-Type": "application/json",
        "X-Authorization-Timestamp": str(int(at if at is not None else time.time())),
        header: hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
    }


@pytest.fixture(scope="session")
def keypair(tmp_path_factory) -> dict:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    folder = tmp_path_factory.mktemp("keys")
    (folder / "private.pem").write_text(private_pem)
    (folder / "public.pem").write_text(public_pem)
    return {
        "private_pem": private_pem,
        "public_pem": public_pem,
        "private_path": folder / "private.pem",
        "public_path": folder / "public.pem",
    }


@pytest.fixture(scope="session")
def redis_url() -> str:
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    try:
        server = RedisServer().start()
    except RuntimeError as error:
        pytest.exit(str(error), returncode=3)
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def postgres_server() -> PostgresServer | None:
    """The throwaway PostgreSQL server, started on first use; None when DATABASE_URL points at another one."""
    if os.environ.get("DATABASE_URL"):
        yield None
        return
    try:
        server = PostgresServer().start()
    except RuntimeError as error:
        pytest.exit(str(error), returncode=3)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """SQLAlchemy URL of a real PostgreSQL database, one for the whole session.

    `DATABASE_URL` when set: that database is then used as is (nothing created, emptied or dropped; tests that write
    to it clean up after themselves). Else the database made in the suite's own throwaway server.
    """
    return os.environ["DATABASE_URL"] if postgres_server is None else postgres_server.url


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path) -> str:
    """A SQLAlchemy URL per test, once for each kind of database the service runs on.

    `sqlite`: a new file in the test's tmp_path. `postgres`: a new, empty database with a unique name in the
    throwaway server, dropped after the test, so no test sees another's rows (under DATABASE_URL: that database, as
    is; see `postgres_url`). The server starts only when a `[postgres]` test runs.
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ayrshare-connect.db'}"
        return
    server: PostgresServer | None = request.getfixturevalue("postgres_server")
    if server is None:
        yield request.getfixturevalue("postgres_url")
        return
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = server.create_database(name)
    yield url
    server.drop_database(name)


@pytest.fixture
def database(database_url):
    """The `database_url` database, migrated, as the service's `Database`."""
    from service.profiles import Database

    database = Database(database_url)
    database.upgrade()
    yield database
    database.engine.dispose()


@pytest.fixture
def migrated(database) -> str:
    """The URL of the migrated `database`, for services started in other processes."""
    return database.engine.url.render_as_string(hide_password=False)


@pytest.fixture(autouse=False)
def redis_client(redis_url) -> redis.Redis:
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    yield client
    client.close()


@pytest.fixture(scope="session")
def emulator_session(keypair):
    with EmulatorProcess(
        domain=DOMAIN,
        public_key_path=keypair["public_path"],
        api_keys=[API_KEY],
        profiles={v: k.title() for k, v in PROFILES.items()},
    ) as emulator:
        yield emulator


@pytest.fixture
def emulator(emulator_session):
    """The session's emulator with counters and knobs reset for this test."""
    emulator_session.reset()
    yield emulator_session
    emulator_session.reset()


@pytest.fixture(scope="session")
def profiles_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("profiles") / "profiles.json"
    path.write_text(json.dumps(PROFILES))
    return path


@pytest.fixture
def link_flow() -> str:
    """The AYRSHARE_LINK_FLOW the service runs with (see `pytest_generate_tests` for modules that run both)."""
    return "session"


LINK_FLOWS = ("session", "jwt")


def pytest_generate_tests(metafunc):
    """A module that sets `RUN_IN_BOTH_LINK_FLOWS = True` runs each of its tests that builds the service once per
    flow (parametrized, not copied)."""
    if not getattr(metafunc.module, "RUN_IN_BOTH_LINK_FLOWS", False) or "link_flow" not in metafunc.fixturenames:
        return
    if any("link_flow" in str(marker.args[0]) for marker in metafunc.definition.iter_markers("parametrize")):
        return  # the test chooses its flows itself (cases that exist in one flow only)
    metafunc.parametrize("link_flow", LINK_FLOWS)


DATA_KEY = "7Q8hOmxkR4IzxdI1sXqgIpjfd84ZoGDL3ViPfzOBzYU="


@pytest.fixture(scope="session")
def shared_database_url(tmp_path_factory) -> str:
    """One migrated SQLite directory for the tests of other features (directory tests use `database_url`)."""
    from service.profiles import Database

    url = f"sqlite:///{tmp_path_factory.mktemp('directory') / 'ayrshare-connect.db'}"
    Database(url).upgrade()
    return url


@pytest.fixture
def settings_env(
    keypair, emulator, profiles_file, redis_url, redis_client, link_flow, shared_database_url
) -> dict[str, str]:
    """A complete, valid configuration pointing at the real emulator and the test Redis."""
    return {
        "AYRSHARE_LINK_FLOW": link_flow,
        "AYRSHARE_API_KEY": API_KEY,
        "AYRSHARE_PRIVATE_KEY": keypair["private_pem"],
        "AYRSHARE_DOMAIN": DOMAIN,
        "AYRSHARE_BASE_URL": emulator.base_url,
        "LINK_ALLOWED_HOSTS": emulator.origin,
        "PROFILE_KEYS_FILE": str(profiles_file),
        "DATABASE_URL": shared_database_url,
        "DATA_ENCRYPTION_KEY": DATA_KEY,
        "REDIS_URL": redis_url,
        "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
        "INTERNAL_API_TOKEN": INTERNAL_TOKEN,
        "AYRSHARE_CONNECT_TIMEOUT": "2",
        "AYRSHARE_READ_TIMEOUT": "5",
        "AYRSHARE_DEADLINE_SECONDS": "10",
        # Tests of other features make many requests per user; tests/test_security_ratelimit.py checks the defaults.
        "RATE_LIMIT_PER_ADDRESS": "100000/minute",
        "RATE_LIMIT_PER_USER": "100000/minute",
        "RATE_LIMIT_UPSTREAM_PER_USER": "100000 per 5 minutes",
        "RATE_LIMIT_UPSTREAM_GLOBAL": "100000 per 5 minutes",
    }


@pytest.fixture
def app(settings_env):
    app = create_app(settings_env)
    app.config["TESTING"] = True
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def start_service(settings_env):
    """Start the service under real gunicorn: `start_service(workers=3, **env_overrides)`."""
    started: list[ServiceProcess] = []

    def start(workers: int = 2, wait: bool = True, extra_args: tuple[str, ...] = (), **overrides: str):
        service = ServiceProcess({**settings_env, **overrides}, workers=workers, extra_args=extra_args)
        started.append(service.start(wait=wait))
        return service

    yield start
    for service in started:
        service.stop()
        service.remove_log()
