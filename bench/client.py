"""A small HTTP load client that checks every answer, run as its own process: `python -m bench.client < job.json`.

wrk is the load generator for throughput (bench/loadgen.py); this client is for the scenarios where each answer must
be looked at (same URL for every request of a burst, `cached`/`expiresAt` of each click) or where the number of
requests, not the time, bounds the run. Modes:

- `burst`: one connection per request, all connected first, then released together by a barrier.
- `pool`: `concurrency` threads, each with its own keep-alive connection, taking requests in order; a request with an
  `at` offset (seconds after start) is not sent before then, which replays a schedule of clicks. `max_seconds` stops
  sending new requests after that long (in-flight ones finish or time out).

Input (stdin, JSON): {"base_url", "mode", "concurrency", "requests": [{"path", "at"?, "method"?, "json"?, "headers"?}],
"headers"?, "timeout"?,
"max_seconds"?, "fresh_connections"?}. Output (stdout, JSON): {"started", "elapsed", "results": [...]}, one result per
request sent: {"i", "start", "latency_ms", "status", "location"?, "json"?, "error"?}.
"""

from __future__ import annotations

import http.client
import itertools
import json
import sys
import threading
import time
from urllib.parse import urlsplit

_STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class _Connection:
    def __init__(self, host: str, port: int, timeout: float):
        self.host, self.port, self.timeout = host, port, timeout
        self.conn: http.client.HTTPConnection | None = None

    def open(self) -> None:
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        self.conn.connect()

    def get(self, path: str, headers: dict, method: str = "GET", body: bytes | None = None) -> tuple[int, dict, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.open()
            try:
                self.conn.request(method, path, body=body, headers=headers)
                response = self.conn.getresponse()
                body = response.read()
                if response.will_close:
                    self.close()
                return response.status, dict(response.getheaders()), body
            except _STALE_CONNECTION:
                # A keep-alive connection the server closed while idle: reconnect once, as a browser would.
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def _send(connection: _Connection, index: int, request: dict, headers: dict) -> dict:
    body = json.dumps(request["json"]).encode() if "json" in request else None
    headers = {**headers, **request.get("headers", {})}
    started = time.time()
    t0 = time.perf_counter()
    result: dict = {"i": index, "start": started}
    try:
        status, response_headers, body = connection.get(request["path"], headers, request.get("method", "GET"), body)
        result["status"] = status
        if "Location" in response_headers:
            result["location"] = response_headers["Location"]
        if response_headers.get("Content-Type", "").startswith("application/json"):
            try:
                result["json"] = json.loads(body)
            except ValueError:
                result["error"] = "bad_json"
    except Exception as error:  # noqa: BLE001 - every failure is a result to report, not a crash
        result["error"] = type(error).__name__
        connection.close()
    result["latency_ms"] = (time.perf_counter() - t0) * 1000
    return result


def run_burst(job: dict, host: str, port: int) -> list[dict]:
    requests = job["requests"]
    headers = job.get("headers", {})
    barrier = threading.Barrier(len(requests) + 1)
    results: list[dict | None] = [None] * len(requests)
    connections = [_Connection(host, port, job.get("timeout", 30)) for _ in requests]

    def one(index: int) -> None:
        try:
            connections[index].open()
        finally:
            barrier.wait()
        results[index] = _send(connections[index], index, requests[index], headers)
        connections[index].close()

    threads = [threading.Thread(target=one, args=(i,), daemon=True) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    barrier.wait()  # every connection is open: release them together
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def run_pool(job: dict, host: str, port: int, started: float) -> list[dict]:
    requests = job["requests"]
    headers = job.get("headers", {})
    fresh = job.get("fresh_connections", False)
    max_seconds = job.get("max_seconds")
    counter = itertools.count()
    results: list[dict] = []
    lock = threading.Lock()

    def worker() -> None:
        connection = _Connection(host, port, job.get("timeout", 30))
        while True:
            index = next(counter)
            if index >= len(requests):
                break
            request = requests[index]
            if request.get("at") is not None:
                delay = started + request["at"] - time.time()
                if delay > 0:
                    time.sleep(delay)
            if max_seconds is not None and time.time() - started > max_seconds:
                break
            result = _send(connection, index, request, headers)
            if fresh:
                connection.close()
            with lock:
                results.append(result)
        connection.close()

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(job["concurrency"])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(results, key=lambda r: r["i"])


def main() -> int:
    job = json.load(sys.stdin)
    parts = urlsplit(job["base_url"])
    started = time.time()
    if job["mode"] == "burst":
        results = run_burst(job, parts.hostname, parts.port)
    elif job["mode"] == "pool":
        results = run_pool(job, parts.hostname, parts.port, started)
    else:
        raise SystemExit(f"unknown mode {job['mode']!r}")
    json.dump({"started": started, "elapsed": time.time() - started, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
