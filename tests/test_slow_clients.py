"""Slow clients (issue 19): 300 sockets sending their headers a few bytes at a time for 30 s, from one client, while
`/healthz` must keep answering within 1 s; against each shipped way to run the service, as it can run here.

- the bare container, as docs/operations.md's `docker run` starts it: gunicorn with config/gunicorn.conf.py and
  `GUNICORN_WORKER_CLASS=gevent`, whose header read is bounded by GUNICORN_KEEPALIVE;
- compose: config/nginx/ayrshare-connect.conf (Debian's nginx binary) in front of the default gthread service.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import requests

from tests.support.processes import PROJECT_ROOT, free_port, wait_until
from tests.support.slow_clients import hold_slow_clients_and_probe

NGINX_SITE = PROJECT_ROOT / "config" / "nginx" / "ayrshare-connect.conf"
SLOW_SOCKETS, HOLD_SECONDS, LIVENESS_SECONDS = 300, 30.0, 1.0


def assert_stayed_alive(report) -> None:
    assert report.slow_sockets_opened == SLOW_SOCKETS
    assert report.latencies, "no health probe ran"
    assert not report.failures, f"{len(report.failures)} of {len(report.latencies) + len(report.failures)} probes: "
    f"{report.failures[:5]}"


def test_the_documented_container_survives_slow_clients(start_service):
    service = start_service(GUNICORN_WORKER_CLASS="gevent")
    report = hold_slow_clients_and_probe(
        "127.0.0.1", service.port, service.url + "/healthz", SLOW_SOCKETS, HOLD_SECONDS, LIVENESS_SECONDS
    )
    assert_stayed_alive(report)


class Nginx:
    """Debian's nginx with the shipped site file, pointed at a service on this machine."""

    def __init__(self, upstream_port: int):
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="nginx-test-"))
        site = NGINX_SITE.read_text().replace("server service:8000;", f"server 127.0.0.1:{upstream_port};")
        site = site.replace("listen 8080;", f"listen 127.0.0.1:{self.port};")
        (self.workdir / "site.conf").write_text(site)
        (self.workdir / "nginx.conf").write_text(
            f"daemon off;\nworker_processes 1;\npid {self.workdir}/nginx.pid;\nerror_log {self.workdir}/error.log;\n"
            "events { worker_connections 4096; }\n"
            f"http {{\n  access_log off;\n  client_body_temp_path {self.workdir};\n  proxy_temp_path {self.workdir};\n"
            f"  include {self.workdir}/site.conf;\n}}\n"
        )
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Nginx:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        self.proc = subprocess.Popen(
            [binary, "-p", str(self.workdir), "-c", str(self.workdir / "nginx.conf")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_until(lambda: requests.get(self.url + "/healthz", timeout=1).ok, 10, what="nginx")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


@pytest.fixture
def nginx_in_front(start_service):
    if not (shutil.which("nginx") or Path("/usr/sbin/nginx").exists()):
        pytest.skip("nginx is not installed (make tools installs it)")
    service = start_service(TRUSTED_PROXY_COUNT="1")
    proxy = Nginx(service.port).start()
    yield proxy
    proxy.stop()


def test_compose_proxy_survives_slow_clients(nginx_in_front):
    report = hold_slow_clients_and_probe(
        "127.0.0.1", nginx_in_front.port, nginx_in_front.url + "/healthz", SLOW_SOCKETS, HOLD_SECONDS, LIVENESS_SECONDS
    )
    assert_stayed_alive(report)


# -- what else the proxy answers: its own errors carry the protective headers, the service's pass unchanged --------
def raw_request(port: int, data: bytes) -> bytes:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # request line too long (414)
        b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n",  # header too large (400/494)
        b"BAD REQUEST\r\n\r\n",  # not HTTP (400)
    ],
    ids=["414", "431", "400"],
)
def test_the_proxys_own_error_answers_carry_security_headers(nginx_in_front, request_bytes):
    head = raw_request(nginx_in_front.port, request_bytes).split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.split()[1] in ("400", "414", "494")
    assert "x-content-type-options: nosniff" in head
    assert "content-security-policy: default-src 'none'; frame-ancestors 'none'" in head


def test_gunicorns_own_error_answers_get_security_headers_from_the_proxy(nginx_in_front):
    # 101 header fields: within nginx's limits, past gunicorn's limit_request_fields (100), so gunicorn answers.
    fields = b"".join(b"X-F%d: v\r\n" % n for n in range(101))
    head = raw_request(
        nginx_in_front.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + fields + b"\r\n"
    )
    head = head.split(b"\r\n\r\n", 1)[0].decode().lower()
    assert head.split()[1] in ("400", "431")
    assert "x-content-type-options: nosniff" in head and "content-security-policy: default-src 'none'" in head


def test_the_services_own_headers_pass_through_the_proxy_once(nginx_in_front):
    page = requests.get(nginx_in_front.url + "/done", timeout=5)
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")  # the page policy, unchanged
    assert page.headers["X-Content-Type-Options"] == "nosniff"  # once: requests would join two with ", "
