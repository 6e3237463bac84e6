"""A small HTTP load client that checks every answer, run as its own process: `python -m bench.client < job.json`.

wrk is the load generator for throughput (bench/loadgen.py); this client is for the scenarios where each answer must
be looked at (same URL for every request of a burst, `cached`/`expiresAt` of each click) or where the number of
requests, not the time, bounds the run. Modes:

- `burst`: one connection per request, all connected first, then every request written at once.
- `pool`: `concurrency` clients, each with its own keep-alive connection, taking requests in order; a request with an
  `at` offset (seconds after start) is not sent before then, which replays a schedule of clicks. `max_seconds` stops
  sending new requests after that long (in-flight ones finish or time out).

One asyncio loop in one thread, with request bytes prepared up front and a minimal HTTP/1.1 reader. An earlier version
ran a thread per connection with http.client: at 200 connections the client's own GIL queue showed up as latency
(200 simultaneous calls straight to the emulator measured 676-916 ms at p99 for a 500 ms upstream).

Input (stdin, JSON): {"base_url", "mode", "concurrency", "requests": [{"path", "at"?, "method"?, "json"?, "headers"?}],
"headers"?, "timeout"?,
"max_seconds"?, "fresh_connections"?}. Output (stdout, JSON): {"started", "elapsed", "results": [...]}, one result per
request sent: {"i", "start", "latency_ms", "status", "location"?, "json"?, "error"?}.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from urllib.parse import urlsplit

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
# A keep-alive connection the server closed while idle shows up as one of these on reuse: reconnect once, as a
# browser would.
_STALE_CONNECTION = (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)


class Client:
    def __init__(self, job: dict):
        parts = urlsplit(job["base_url"])
        self.host, self.port = parts.hostname, parts.port
        self.timeout = job.get("timeout", 30)
        self.headers = {"Host": f"{self.host}:{self.port}", **job.get("headers", {})}

    async def connect(self) -> Connection:
        return await asyncio.wait_for(asyncio.open_connection(self.host, self.port), self.timeout)

    async def exchange(
        self, connection: Connection | None, index: int, request: dict, keep_alive: bool
    ) -> tuple[dict, Connection | None]:
        """Send one request (connecting first if needed) and read its answer; returns the result and the connection
        to reuse, or None when it was closed."""
        payload = request_bytes(request, self.headers, keep_alive)
        result: dict = {"i": index, "start": time.time()}
        t0 = time.perf_counter()
        for attempt in (1, 2):
            reused = connection is not None
            try:
                if connection is None:
                    connection = await self.connect()
                reader, writer = connection
                writer.write(payload)
                status, headers, body = await asyncio.wait_for(read_response(reader), self.timeout)
                result["status"] = status
                if "location" in headers:
                    result["location"] = headers["location"]
                if headers.get("content-type", "").startswith("application/json"):
                    try:
                        result["json"] = json.loads(body)
                    except ValueError:
                        result["error"] = "bad_json"
                if not keep_alive or headers.get("connection", "").lower() == "close":
                    connection = _close(connection)
                break
            except _STALE_CONNECTION as error:
                connection = _close(connection)
                if reused and attempt == 1:
                    continue
                result["error"] = type(error).__name__
                break
            except Exception as error:  # noqa: BLE001 - every failure is a result to report, not a crash
                connection = _close(connection)
                result["error"] = type(error).__name__
                break
        result["latency_ms"] = (time.perf_counter() - t0) * 1000
        return result, connection


def _close(connection: Connection | None) -> None:
    if connection is not None:
        connection[1].close()


def request_bytes(request: dict, headers: dict, keep_alive: bool) -> bytes:
    body = json.dumps(request["json"]).encode() if "json" in request else b""
    lines = [f"{request.get('method', 'GET')} {request['path']} HTTP/1.1"]
    lines += [f"{name}: {value}" for name, value in {**headers, **request.get("headers", {})}.items()]
    lines += [f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep_alive else 'close'}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict, bytes]:
    """Status, headers (lower-case names) and body of one HTTP/1.1 answer (Content-Length, chunked, or to close)."""
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    status = int(head[0].split()[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        if name:
            headers[name.strip().lower()] = value.strip()
    if "content-length" in headers:
        return status, headers, await reader.readexactly(int(headers["content-length"]))
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16):
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        await reader.readuntil(b"\r\n")  # the empty line after the last chunk (no trailers are sent to us)
        return status, headers, body
    headers["connection"] = "close"
    return status, headers, await reader.read()


async def run_burst(job: dict) -> list[dict]:
    client = Client(job)
    requests = job["requests"]
    connections = await asyncio.gather(*(client.connect() for _ in requests))
    go = asyncio.Event()

    async def one(index: int) -> dict:
        await go.wait()
        result, _ = await client.exchange(connections[index], index, requests[index], keep_alive=False)
        return result

    tasks = [asyncio.create_task(one(i)) for i in range(len(requests))]
    await asyncio.sleep(0)  # every task is now waiting on `go`: release them together
    go.set()
    return list(await asyncio.gather(*tasks))


async def run_pool(job: dict, started: float) -> list[dict]:
    client = Client(job)
    requests = job["requests"]
    keep_alive = not job.get("fresh_connections", False)
    max_seconds = job.get("max_seconds")
    counter = itertools.count()
    results: list[dict] = []

    async def worker() -> None:
        connection = None
        while (index := next(counter)) < len(requests):
            request = requests[index]
            if request.get("at") is not None:
                delay = started + request["at"] - time.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            if max_seconds is not None and time.time() - started > max_seconds:
                break
            result, connection = await client.exchange(connection, index, request, keep_alive)
            results.append(result)
        _close(connection)

    await asyncio.gather(*(worker() for _ in range(job["concurrency"])))
    return sorted(results, key=lambda r: r["i"])


def main() -> int:
    job = json.load(sys.stdin)
    started = time.time()
    if job["mode"] == "burst":
        results = asyncio.run(run_burst(job))
    elif job["mode"] == "pool":
        results = asyncio.run(run_pool(job, started))
    else:
        raise SystemExit(f"unknown mode {job['mode']!r}")
    json.dump({"started": started, "elapsed": time.time() - started, "results": results}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
