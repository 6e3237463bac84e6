"""Real processes for tests and benchmarks: a throwaway redis-server and the service under gunicorn.

Nothing here is mocked: each helper starts the real binary on a free loopback port, waits until it answers, and
stops it (SIGTERM, then SIGKILL) when done. Logs go to files so a failing test can show their tail.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def without_root_privileges() -> list[str]:
    """A command prefix under which root honours file modes as any other user does (the suite runs as root in CI):
    setpriv, from util-linux, drops CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH before it runs the command."""
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, below the kernel's ephemeral range: a port from bind(0) is an ephemeral one, and an
    outgoing connection (to Redis, the emulator, ...) can take it before the process it is meant for binds it."""
    try:
        lowest_ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        lowest_ephemeral = 0
    candidates = range(10_000, lowest_ephemeral) if lowest_ephemeral > 11_000 else ()
    for port in random.sample(candidates, min(len(candidates), 200)):
        if port in _HANDED_OUT:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket() as sock:  # no range below the ephemeral one: the kernel's choice
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception:  # noqa: BLE001, S110 - not up yet
            pass
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class RedisServer:
    """A redis-server on a free port with no persistence; can be killed, paused and restarted on the same port."""

    def __init__(self, port: int | None = None, extra_args: tuple[str, ...] = ()):
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(
                "redis-server is not installed: the tests need a real Redis. Install it "
                "(apt-get install redis-server) or point REDIS_URL at a Redis the tests may flush."
            )
        self.binary = binary
        self.port = port or free_port()
        self.extra_args = extra_args
        self.workdir = Path(tempfile.mkdtemp(prefix="redis-test-"))
        self.log_path = self.workdir / "redis.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2)

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            "--logfile",
            str(self.log_path),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: self.client().ping(), 10, what=f"redis-server on port {self.port}")
        return self

    def kill(self) -> None:
        """kill -9: no goodbye to clients, exactly like a crash."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def pause(self) -> None:
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.resume()
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


class ServiceProcess:
    """The service under real gunicorn with the production config file."""

    def __init__(self, env: dict[str, str], workers: int = 2, extra_args: tuple[str, ...] = ()):
        self.port = free_port()
        # Only what the test gives, plus what a process needs to run: no settings leak in from the outer
        # environment or from a developer's .env file.
        base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
        self.env = {**base, "ENV_FILE": "/nonexistent/.env", "PYTHONUNBUFFERED": "1", **env}
        # As deployed, /metrics lives on a port of its own; a free one, since several services run at once.
        self.env.setdefault("METRICS_BIND", f"127.0.0.1:{free_port()}")
        self.workers = workers
        self.extra_args = extra_args
        self.log_path = Path(tempfile.mkdtemp(prefix="service-test-")) / "service.log"
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Where this service's /metrics is: its METRICS_BIND listener, or the main port with METRICS_BIND=main."""
        bind = self.env["METRICS_BIND"]
        return self.url if bind == "main" else f"http://{bind}"

    def command(self) -> list[str]:
        gunicorn = str(Path(sys.executable).parent / "gunicorn")
        return [
            gunicorn,
            "-c",
            "config/gunicorn.conf.py",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            *self.extra_args,
            "service:create_app()",
        ]

    def start(self, wait: bool = True) -> ServiceProcess:
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self.command(),
            cwd=PROJECT_ROOT,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if wait:
            try:
                wait_until(lambda: requests.get(self.url + "/healthz", timeout=1).ok, 30, what="the service")
            except TimeoutError:
                self.stop()
                raise RuntimeError("service did not start:\n" + self.log()) from None
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def remove_log(self) -> None:
        shutil.rmtree(self.log_path.parent, ignore_errors=True)

    def log_tail(self) -> str:
        return _tail(self.log_path)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 40) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode
