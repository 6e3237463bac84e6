"""The real stack a benchmark (or the soak run) uses: redis-server, the Ayrshare emulator, the service under gunicorn.

    with Stack(users=1000) as stack:
        service = stack.start_service(worker_class="gevent", workers=2)
        stack.emulator.set_knobs(latency_ms=1000)
        path = stack.signed_path("user0007")
        ...

Everything is a separate process on loopback with free ports, built from the same helpers the tests use
(tests/support): nothing is mocked. The service always runs with config/gunicorn.conf.py; the worker model comes in
through the GUNICORN_* settings that file reads (the service's own validated settings), exactly as in production. The
bare endpoint (bench/bare_app.py) is started the same way, with the same full service environment.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from prometheus_client.parser import text_string_to_metric_families

from service.auth import signed_path
from service.config import load_settings
from service.profiles import Database
from tests.support.emulator_proc import EmulatorProcess
from tests.support.processes import RedisServer, ServiceProcess

API_KEY = "BENCH-API-KEY-7Q2W9E4R-T6Y8U1I3-0000"
SIGNING_SECRET = "BENCH-SIGNING-SECRET-b8f3c1d9e0a24f6b9c7d5e3f1a2b"
INTERNAL_TOKEN = "BENCH-INTERNAL-TOKEN-5f1e9d3c7b2a"
DOMAIN = "ACME"
DATA_ENCRYPTION_KEY = "hq3o0S0x3WvJ7rXhZ1yqJ0m1mQnI0y1oEr3H0s0eGxk="
SERVICE_APP = "service:create_app()"
BARE_APP = "bench.bare_app:create_app()"
# AYRSHARE_LINK_FLOW: every scenario runs the default, Link Sessions; cold burst and the simulated day run both.
DEFAULT_FLOW = "session"
FLOWS = ("session", "jwt")
# The emulator endpoint each flow mints its linking URLs at, and the query parameter that carries the URL's token.
MINT_PATHS = {"session": "/api/profiles/link-sessions", "jwt": "/api/profiles/generateJWT"}
URL_TOKEN_PARAMS = {"session": "session", "jwt": "jwt"}


def user_name(index: int, prefix: str = "user") -> str:
    return f"{prefix}{index:05d}"


class AppProcess(ServiceProcess):
    """ServiceProcess with a choice of WSGI target, so the bare endpoint runs under the very same gunicorn command;
    `gunicorn` is the worker model it runs with."""

    def __init__(self, env: dict[str, str], app: str = SERVICE_APP):
        self.gunicorn = gunicorn_settings(env)
        super().__init__(env, workers=self.gunicorn["workers"])
        self.app = app

    def command(self) -> list[str]:
        return [*super().command()[:-1], self.app]

    def worker_pids(self) -> list[int]:
        """The gunicorn workers (children of the master), read from /proc."""
        if self.proc is None:
            return []
        return sorted(_children(self.proc.pid))

    def wait_for_workers(self, count: int, timeout: float = 30) -> list[int]:
        """Wait until `count` workers serve, each having answered a /healthz of its own; returns their pids.

        gunicorn logs "Booting worker with pid" as it forks a worker, before the worker has imported and built the app
        (~0.5 s of CPU, on the cores a measurement shares): measuring from then on would measure part of a start-up.
        A worker accepts connections only once its app is loaded, so fresh connections go out until every worker has
        accepted and answered one; which process holds the server end of a connection is read from /proc."""
        deadline = time.monotonic() + timeout
        answered: set[int] = set()
        while time.monotonic() < deadline:
            pids = self.worker_pids()
            if len(pids) >= count and len(answered.intersection(pids)) >= count:
                return pids
            pid = self._healthz_answered_by(pids)
            if pid is not None:
                answered.add(pid)
        raise TimeoutError(f"only {len(answered)} of {count} workers answered /healthz:\n{self.log_tail()}")

    def _healthz_answered_by(self, pids: list[int]) -> int | None:
        """GET /healthz over a fresh connection: the worker (of `pids`) that accepted it and answered 200, or None."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
                client_port = sock.getsockname()[1]
                holder = None
                for _ in range(100):  # a loaded worker accepts within a few ms; none at all while none is loaded
                    if (holder := connection_holder(self.port, client_port, pids)) is not None:
                        break
                    time.sleep(0.01)
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                answered = sock.recv(64).startswith(b"HTTP/1.1 200")
        except OSError:
            return None
        return holder if answered else None


def connection_holder(server_port: int, client_port: int, pids: list[int]) -> int | None:
    """Which of `pids` holds the server end of the loopback TCP connection from `client_port` (None: not accepted)."""
    inode = "0"  # a connection still in the listen queue has no socket inode yet
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1].endswith(f":{server_port:04X}") and fields[2].endswith(f":{client_port:04X}"):
            inode = fields[9]
    if inode == "0":
        return None
    for pid in pids:
        with contextlib.suppress(OSError):  # the process or one of its descriptors went away meanwhile
            if any(os.readlink(fd) == f"socket:[{inode}]" for fd in Path(f"/proc/{pid}/fd").iterdir()):
                return pid
    return None


def _children(pid: int) -> list[int]:
    pids: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        pids.extend(int(child) for child in (task / "children").read_text().split())
    return pids


def pss_kib(pid: int) -> int:
    """Proportional set size (Pss in /proc/<pid>/smaps_rollup), in KiB: pages a worker shares with the master it was
    forked from and with the other workers count once across them, not once in each as in RSS."""
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    raise RuntimeError(f"no Pss for pid {pid}")


def rss_kib(pid: int) -> int:
    """Resident set size of a process (VmRSS in /proc/<pid>/status), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the processes have used so far (utime + stime of /proc/<pid>/stat)."""
    ticks = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def load_average() -> tuple[float, float, float]:
    one, five, fifteen = Path("/proc/loadavg").read_text().split()[:3]
    return float(one), float(five), float(fifteen)


class Stack:
    """Keys, a profiles file for `users` users, a redis-server and the emulator; services are started on demand."""

    def __init__(self, users: int = 1000, prefixes: tuple[str, ...] = ("user",)):
        self.workdir = Path(tempfile.mkdtemp(prefix="ayr-bench-"))
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        (self.workdir / "public.pem").write_bytes(public_pem)
        self.profiles = {
            user_name(i, prefix): f"PK-{prefix.upper()}-{i:05d}" for prefix in prefixes for i in range(users)
        }
        self.profiles_path = self.workdir / "profiles.json"
        self.profiles_path.write_text(json.dumps(self.profiles))
        self.database_url = f"sqlite:///{self.workdir / 'ayrshare-connect.db'}"
        Database(self.database_url).upgrade()
        self.redis: RedisServer | None = None
        self.emulator: EmulatorProcess | None = None
        self.services: list[AppProcess] = []

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> Stack:
        self.redis = RedisServer().start()
        # No profiles file for the emulator: it accepts any profile key, so user counts are limited by nothing.
        self.emulator = EmulatorProcess(DOMAIN, self.workdir / "public.pem", [API_KEY]).start()
        return self

    def stop(self) -> None:
        for service in list(self.services):
            self.stop_service(service)
        if self.emulator is not None:
            self.emulator.stop()
        if self.redis is not None:
            self.redis.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- the service -----------------------------------------------------------------------------------------
    def service_env(self, flow: str = DEFAULT_FLOW, **overrides: str) -> dict[str, str]:
        """The production configuration pointed at this stack; every feature on, as deployed. The private key goes
        in for the jwt flow only: the session flow runs without one, which shows it needs none."""
        if flow not in FLOWS:
            raise ValueError(f"unknown link flow {flow!r}; expected one of {', '.join(FLOWS)}")
        env = {
            "AYRSHARE_API_KEY": API_KEY,
            "AYRSHARE_LINK_FLOW": flow,
            "AYRSHARE_DOMAIN": DOMAIN,
            "AYRSHARE_BASE_URL": self.emulator.base_url,
            "LINK_ALLOWED_HOSTS": self.emulator.origin,
            "PROFILE_KEYS_FILE": str(self.profiles_path),
            "DATABASE_URL": self.database_url,
            "DATA_ENCRYPTION_KEY": DATA_ENCRYPTION_KEY,
            "REDIS_URL": self.redis.url,
            "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
            "INTERNAL_API_TOKEN": INTERNAL_TOKEN,
            "LOG_LEVEL": "INFO",
            # Rate limiting stays on (its counting is part of the hot path) with limits no benchmark reaches: the
            # whole load comes from one address, and time-compressed days need more upstream calls per 5 minutes.
            "RATE_LIMIT_PER_ADDRESS": "100000000/minute",
            "RATE_LIMIT_PER_USER": "100000000/minute",
            "RATE_LIMIT_UPSTREAM_PER_USER": "100000 per 5 minutes",
            # The account-wide upstream budget likewise: scenario 3 alone makes 1,000 misses in seconds.
            "RATE_LIMIT_UPSTREAM_GLOBAL": "100000000 per 5 minutes",
            # Links are signed once for a whole run (up to a simulated day plus an hour), not per page render.
            "SIGNED_LINK_MAX_TTL_SECONDS": "86400",
        }
        if flow == "jwt":
            env["AYRSHARE_PRIVATE_KEY"] = self.private_pem
        env.update(overrides)
        return env

    def start_service(
        self,
        worker_class: str | None = None,
        workers: int | None = None,
        threads: int | None = None,
        app: str = SERVICE_APP,
        flow: str = DEFAULT_FLOW,
        **env_overrides: str,
    ) -> AppProcess:
        """Start `app` under gunicorn with config/gunicorn.conf.py in link flow `flow`, and wait until every worker
        serves; None keeps the setting's default."""
        env = self.service_env(flow, **env_overrides)
        if worker_class:
            env["GUNICORN_WORKER_CLASS"] = worker_class
        if workers:
            env["GUNICORN_WORKERS"] = str(workers)
        if threads:
            env["GUNICORN_THREADS"] = str(threads)
        service = AppProcess(env, app=app)
        self.services.append(service)  # stopped with the stack even if it never comes up
        service.start()
        service.wait_for_workers(service.gunicorn["workers"])
        return service

    def default_gunicorn(self) -> dict[str, object]:
        """The worker model config/gunicorn.conf.py gives this stack's service when no GUNICORN_* setting is made."""
        return gunicorn_settings(self.service_env())

    def stop_service(self, service: AppProcess) -> None:
        service.stop()
        shutil.rmtree(service.log_path.parent, ignore_errors=True)  # the log has been read by then, if it mattered
        if service in self.services:
            self.services.remove(service)

    def signed_path(self, user: str, ttl_seconds: int = 3600) -> str:
        return signed_path(user, SIGNING_SECRET, ttl_seconds=ttl_seconds)

    def upstream_calls(self) -> int:
        """Linking URLs the emulator was asked for, at either endpoint (generateJWT and Link Session creates)."""
        return self.emulator.calls()

    def direct_mint_request(self, flow: str, profile_key: str) -> dict:
        """A bench/client.py request asking the emulator itself for a linking URL the way `flow` does, for the
        "upstream alone" baselines: a Link Session create (API key and Profile-Key header only) or a generateJWT call
        (with the private key)."""
        headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
        if flow == "session":
            return {"path": MINT_PATHS[flow], "method": "POST", "headers": {**headers, "Profile-Key": profile_key}}
        body = {"domain": DOMAIN, "privateKey": self.private_pem, "profileKey": profile_key}
        return {"path": MINT_PATHS[flow], "method": "POST", "headers": headers, "json": body}

    def warm(self, service: AppProcess, users: list[str]) -> dict[str, str]:
        """Fetch each user's link once (cache fill); returns user → linking URL."""
        urls = {}
        with requests.Session() as session:
            for user in users:
                response = session.get(service.url + self.signed_path(user), allow_redirects=False, timeout=30)
                if response.status_code != 302:
                    raise RuntimeError(f"warm-up of {user}: HTTP {response.status_code}: {response.text[:200]}")
                urls[user] = response.headers["Location"]
        return urls


def link_token(url: str | None, flow: str) -> str | None:
    """The token a linking URL of `flow` carries: `?session=ayr_ls_...&domain=...` or `?domain=...&jwt=...`; None when
    the URL is not one of that flow's."""
    if not url:
        return None
    values = parse_qs(urlsplit(url).query)
    token = values.get(URL_TOKEN_PARAMS[flow], [None])[0]
    if not token or values.get("domain") != [DOMAIN] or (flow == "session" and not token.startswith("ayr_ls_")):
        return None
    return token


def scrape_counters(service: AppProcess, name: str) -> list[tuple[dict[str, str], float]]:
    """The samples of counter `name` (e.g. `ayrshare_connect_upstream_calls`) on the service's /metrics, summed over
    its workers by the service: (labels, value) pairs, whatever labels the counter has (`flow` among them)."""
    response = requests.get(service.metrics_url + "/metrics", timeout=10)
    response.raise_for_status()
    return [
        (dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
        if sample.name == f"{name}_total"
    ]


def counter_by(service: AppProcess, name: str, label: str) -> dict[str, float]:
    """Counter `name` summed by one of its labels, the other labels added up: `{"session": 3.0, ...}`."""
    totals: dict[str, float] = {}
    for labels, value in scrape_counters(service, name):
        totals[labels.get(label, "")] = totals.get(labels.get(label, ""), 0.0) + value
    return totals


def gunicorn_settings(env: dict[str, str]) -> dict[str, object]:
    """worker_class/workers/threads of a server started with `env`: config/gunicorn.conf.py takes them from the
    service's validated settings, read here the same way (so a bad setting stops here, with the same message)."""
    settings = load_settings(env)
    return {"worker_class": settings.worker_class, "workers": settings.workers, "threads": settings.threads}
