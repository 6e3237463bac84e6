"""`REDIS_URL=rediss://…` (managed Redis with TLS: ElastiCache, Memorystore, Upstash): the link cache and the rate
limits both go over TLS with the server's certificate verified, against a real redis-server listening with TLS only."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from service import create_app
from service.auth import signed_path
from tests.conftest import SIGNING_SECRET
from tests.support.processes import RedisServer, wait_until


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_key(key, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _certificate_authority(directory: Path, name: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )  # keyCertSign, cRLSign
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


@pytest.fixture(scope="module")
def certificates(tmp_path_factory) -> dict[str, Path]:
    """A CA, a server certificate it signed for 127.0.0.1, and an unrelated CA."""
    directory = tmp_path_factory.mktemp("redis-tls")
    ca_path, ca_key, ca_cert = _certificate_authority(directory, "test-ca")
    other_ca_path, _, _ = _certificate_authority(directory, "other-ca")
    server_key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(_name("redis.test"))
        .issuer_name(ca_cert.subject)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(ca_key, hashes.SHA256())
    )
    (directory / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, directory / "server.key")
    return {"ca": ca_path, "other_ca": other_ca_path, "cert": directory / "server.pem", "key": directory / "server.key"}


class TlsRedisServer(RedisServer):
    """redis-server with its plain port off and TLS on `port` (clients need no certificate of their own)."""

    def __init__(self, certificates: dict[str, Path]):
        super().__init__()
        self.certificates = certificates
        # Later arguments override earlier ones: `--port 0` here turns off the plain port RedisServer asks for.
        self.extra_args = (
            *("--port", "0", "--tls-port", str(self.port)),
            *("--tls-cert-file", str(certificates["cert"]), "--tls-key-file", str(certificates["key"])),
            *("--tls-ca-cert-file", str(certificates["ca"]), "--tls-auth-clients", "no"),
        )

    def url_with_ca(self, ca: Path) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={ca}"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url_with_ca(self.certificates["ca"]), socket_timeout=2)


@pytest.fixture(scope="module")
def tls_redis(certificates):
    server = TlsRedisServer(certificates)
    server.start()
    yield server
    server.stop()


def test_the_cache_and_the_rate_limits_work_over_tls(settings_env, emulator, tls_redis, certificates):
    tls_redis.client().flushall()
    env = {**settings_env, "REDIS_URL": tls_redis.url_with_ca(certificates["ca"]), "RATE_LIMIT_PER_USER": "2/minute"}
    client = create_app(env).test_client()
    first, second, third = (client.get(signed_path("alice", SIGNING_SECRET)) for _ in range(3))
    assert [first.status_code, second.status_code, third.status_code] == [302, 302, 429]
    assert first.headers["Location"] == second.headers["Location"] and emulator.calls() == 1
    keys = [key.decode() for key in tls_redis.client().keys("*")]
    assert any(key.startswith("connect:link:v1:") for key in keys)  # the link is cached in the TLS Redis
    # and the upstream limit counts there (`limits`' key shape); the request limits count in process memory
    assert any("/connect:ratelimit/upstream/" in key for key in keys)


def test_a_server_certificate_our_ca_did_not_sign_is_refused(settings_env, emulator, tls_redis, certificates):
    """Verification is on: with the wrong CA the service does not use that Redis, and still answers (directly)."""
    tls_redis.client().flushall()
    env = {**settings_env, "REDIS_URL": tls_redis.url_with_ca(certificates["other_ca"])}
    client = create_app(env).test_client()
    assert client.get(signed_path("alice", SIGNING_SECRET)).status_code == 302
    wait_until(lambda: emulator.calls() == 1, 5, what="the direct upstream call")
    assert tls_redis.client().keys("*") == []
