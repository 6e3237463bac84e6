"""Slow clients (slowloris): many sockets that send a request's headers a few bytes at a time, held open while
`/healthz` is probed on fresh connections; what a deployment must survive without running out of threads."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field

import requests


@dataclass
class ProbeReport:
    """What the health probes saw while the slow sockets were held."""

    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    slow_sockets_opened: int = 0
    slow_sockets_closed_by_server: int = 0

    @property
    def worst(self) -> float:
        return max(self.latencies, default=float("inf"))


def _trickle(sockets: list[socket.socket], stop: threading.Event, report: ProbeReport, interval: float) -> None:
    # One header line per socket every `interval` seconds: never a complete request.
    while not stop.wait(interval):
        for sock in list(sockets):
            try:
                sock.sendall(b"X-Slow: x\r\n")
            except OSError:
                sockets.remove(sock)
                report.slow_sockets_closed_by_server += 1


def hold_slow_clients_and_probe(
    host: str,
    port: int,
    health_url: str,
    sockets: int = 300,
    seconds: float = 30.0,
    probe_timeout: float = 1.0,
    trickle_interval: float = 2.0,
) -> ProbeReport:
    """Open `sockets` slow connections to host:port, keep them trickling for `seconds`, probing `health_url`."""
    report = ProbeReport()
    held: list[socket.socket] = []
    stop = threading.Event()
    try:
        for _ in range(sockets):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: slow.example\r\n")
            held.append(sock)
        report.slow_sockets_opened = len(held)
        trickler = threading.Thread(target=_trickle, args=(held, stop, report, trickle_interval), daemon=True)
        trickler.start()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.monotonic()
            try:
                response = requests.get(health_url, timeout=probe_timeout, headers={"Connection": "close"})
                elapsed = time.monotonic() - started
                report.latencies.append(elapsed)
                if response.status_code != 200:
                    report.failures.append(f"status {response.status_code}")
                elif elapsed > probe_timeout:
                    report.failures.append(f"answered in {elapsed:.2f} s")
            except requests.RequestException as error:
                report.failures.append(type(error).__name__)
            time.sleep(max(0.0, 0.25 - (time.monotonic() - started)))
        stop.set()
        trickler.join(5)
    finally:
        stop.set()
        for sock in held:
            sock.close()
    return report
