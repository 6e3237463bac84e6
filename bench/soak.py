"""`make soak`: a bounded soak run mixing cache hits, misses, upstream errors and a Redis restart.

Runs the service under gunicorn with its production config against the emulator and a real redis-server for
`--seconds` (default 180), with a few client threads. Tokens are short-lived (so misses keep happening), the
emulator fails in bursts (so the circuit breaker and stale-if-error are exercised), and Redis is killed and
restarted once. Every request is classified as ok, failed-during-a-fault (an upstream fault window, where an error can
be the right answer), or failed-otherwise (must be zero). Worker RSS is sampled throughout to show it stays flat.

    python -m bench.soak [--seconds 180] [--threads 8] [--users 60]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import threading
import time
from pathlib import Path

import requests

from bench.stack import Stack
from tests.support.processes import ServiceProcess

RESULTS = Path(__file__).resolve().parent / "results"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(master)], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


class Soak:
    def __init__(self, seconds: float, threads: int, users: int):
        self.seconds, self.threads, self.users = seconds, threads, users
        self.fault_window = threading.Event()  # set while an upstream fault burst (or its aftermath) is active
        self.counts = {"ok": 0, "failed_in_fault": 0, "failed_otherwise": 0}
        self.failures: dict[str, int] = {}
        self.rss: list[dict] = []
        self.lock = threading.Lock()

    def run(self) -> dict:
        stack = Stack(users=self.users).start()
        stack.emulator.set_knobs(token_lifetime_seconds=40, latency_ms=50)
        service = stack.start_service(
            workers=2,
            LINK_MIN_REMAINING_SECONDS="20",
            LINK_STALE_MIN_SECONDS="10",
            CIRCUIT_COOLDOWN_SECONDS="3",
            LOG_LEVEL="WARNING",
        )
        emulator, redis_server = stack.emulator, stack.redis
        self.signed_path = stack.signed_path
        self.user_names = list(stack.profiles)
        stop = threading.Event()
        clients = [
            threading.Thread(target=self._client, args=(service, stop), daemon=True) for _ in range(self.threads)
        ]
        started = time.monotonic()
        for thread in clients:
            thread.start()
        try:
            self._drive_faults(service, emulator, redis_server, started)
        finally:
            stop.set()
            for thread in clients:
                thread.join(20)
            upstream_calls = emulator.calls()
            stack.stop()
        return self._report(time.monotonic() - started, upstream_calls)

    def _client(self, service: ServiceProcess, stop: threading.Event) -> None:
        session = requests.Session()
        while not stop.is_set():
            # Zipf-ish: a few users click a lot (hits), the long tail mostly misses.
            user = self.user_names[min(int(random.paretovariate(1.2)) - 1, self.users - 1)]
            in_fault = self.fault_window.is_set()
            try:
                status = session.get(service.url + self.signed_path(user), allow_redirects=False, timeout=30)
                outcome = "ok" if status.status_code == 302 else f"http_{status.status_code}"
            except requests.RequestException as error:
                outcome = type(error).__name__
            in_fault = in_fault or self.fault_window.is_set()
            with self.lock:
                if outcome == "ok":
                    self.counts["ok"] += 1
                else:
                    self.counts["failed_in_fault" if in_fault else "failed_otherwise"] += 1
                    self.failures[outcome] = self.failures.get(outcome, 0) + 1

    def _drive_faults(self, service, emulator, redis_server, started: float) -> None:
        """Upstream error bursts every ~30 s and one Redis kill/restart at the middle; RSS sampled every 5 s."""
        next_fault, redis_restarted, next_sample = started + 20, False, started
        while (now := time.monotonic()) - started < self.seconds:
            if now >= next_sample:
                self.rss.append(
                    {
                        "t": round(now - started, 1),
                        "rss_mb": [round(rss_mb(p), 1) for p in worker_pids(service.proc.pid)],
                    }
                )
                next_sample = now + 5
            if now >= next_fault:
                self.fault_window.set()
                emulator.set_knobs(fault=random.choice(["500", "503", "429", "drop"]), fault_count=-1)
                time.sleep(4)
                emulator.set_knobs(fault=None)
                time.sleep(4)  # circuit cool-down and half-open probe
                self.fault_window.clear()
                next_fault = time.monotonic() + 30
            if not redis_restarted and now - started > self.seconds / 2:
                redis_server.kill()  # Redis faults must cost no request: outside the fault window on purpose
                time.sleep(3)
                redis_server.start()
                redis_restarted = True
            time.sleep(0.2)

    def _report(self, elapsed: float, upstream_calls: int) -> dict:
        first, last = self.rss[1] if len(self.rss) > 1 else self.rss[0], self.rss[-1]
        report = {
            "seconds": round(elapsed, 1),
            "requests": sum(self.counts.values()),
            **self.counts,
            "failures_by_kind": self.failures,
            "upstream_calls": upstream_calls,
            "rss_mb_first": first["rss_mb"],
            "rss_mb_last": last["rss_mb"],
            "rss_mb_max": max(max(s["rss_mb"] or [0]) for s in self.rss),
            "rss_samples": self.rss,
        }
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "soak.json").write_text(json.dumps(report, indent=2))
        print(f"soak: {report['seconds']} s, {report['requests']} requests, {upstream_calls} upstream calls")
        print(
            f"  ok {report['ok']}, failed during upstream faults {report['failed_in_fault']}, "
            f"failed otherwise {report['failed_otherwise']} {self.failures}"
        )
        print(
            f"  worker RSS MB: first {report['rss_mb_first']}, last {report['rss_mb_last']}, max {report['rss_mb_max']}"
        )
        return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--users", type=int, default=60)
    args = parser.parse_args()
    report = Soak(args.seconds, args.threads, args.users).run()
    return 0 if report["failed_otherwise"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
