"""The fetcher: a process beside each gunicorn worker that resolves the worker's cache misses.

Why a second process. In a burst, a worker holds a hundred requests' threads, all queued for its one interpreter
lock. The request that has to reach Ayrshare — the leader of the burst's single flight — makes three Redis round
trips first (the claim, the upstream budget, and usually the user's request limit), and after each one it queues for
the lock again behind every other request of its worker: 25-100 ms before the call leaves, which all 200 requests
then wait for on top of Ayrshare's own time (BENCHMARKS.md, scenario 2). The fetcher is forked from its worker once
the app is loaded, so it has the same settings, clients and secrets, and an interpreter of its own that is idle: the
leader hands it the miss in one write and waits, and the fetcher runs exactly what the leader would have run
(`LinkBroker.resolve_miss`: the claim, the upstream budget, the circuit breaker, the call, the store write).

What stays the same: every rule of the single-flight, the budget and the breaker (the same code runs, in the
fetcher), the request's deadline (both processes read the same monotonic clock), the error a caller sees (status,
code, message, Retry-After), and the upstream time in the request log. The socket between the two is private to
them (a socketpair); the links it carries are never logged.

When one of them dies. The worker's misses run in its own threads again, as they do without a fetcher, and the worker
asks gunicorn to replace it (a graceful exit: requests in flight finish), which brings a new fetcher. A fetcher whose
worker is gone reads the end of its socket, finishes the calls it has started (their links are stored for everyone)
and exits; it ignores the signals a terminal or a process manager sends the whole group, so it never ends first.

`start_fetcher` is called from `post_worker_init` in config/gunicorn.conf.py (`UPSTREAM_FETCHER=0` turns it off).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from .broker import ResolverGone
from .connect import ConnectService, Timings, UpstreamFetch
from .errors import ServiceError, UpstreamTimeout
from .links import Link, LinkOptions

log = logging.getLogger(__name__)

# The fetcher keeps the request's deadline itself; a leader waits this much longer only in case the fetcher hangs.
ANSWER_GRACE_SECONDS = 2.0
# Signals sent to a whole process group (Ctrl-C in a terminal, some process managers): the worker handles them, and
# the fetcher stops when its worker does.
_GROUP_SIGNALS = ("SIGINT", "SIGTERM", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGWINCH")


def start_fetcher(
    service: ConnectService,
    threads: int,
    on_lost: Callable[[int], None],
    close_in_fetcher: Iterable = (),
) -> FetcherClient:
    """Fork the fetcher for this worker and route `service`'s misses through it.

    Call it before the worker starts any thread (forking copies only the calling thread). `threads` bounds the calls
    the fetcher makes at once (the worker's own thread count: it can never have more misses in flight). `on_lost`
    is called once, with the fetcher's pid, if the fetcher goes away. `close_in_fetcher`: sockets of the worker's
    that the fetcher must not hold open (gunicorn's listeners).
    """
    worker_end, fetcher_end = socket.socketpair()
    pid = os.fork()
    if pid == 0:
        worker_end.close()
        status = 0
        try:
            for sock in close_in_fetcher:
                sock.close()
            _leave_group_signals_to_the_worker()
            serve(fetcher_end, service, threads)
        except BaseException:  # noqa: BLE001 - reported, and the worker carries on without us
            log.exception("upstream fetcher failed")
            status = 1
        finally:
            sys.stderr.flush()
            os._exit(status)  # never the worker's exit handlers: they belong to the worker
    fetcher_end.close()
    client = FetcherClient(worker_end, pid, on_lost)
    service.broker.miss_resolver = client.resolve
    return client


def _leave_group_signals_to_the_worker() -> None:
    signal.set_wakeup_fd(-1)  # gunicorn's worker wakes its loop through a pipe: not ours to write to
    for name in _GROUP_SIGNALS:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    for name in ("SIGABRT", "SIGCHLD"):
        signal.signal(getattr(signal, name), signal.SIG_DFL)


# -- the worker's side ---------------------------------------------------------------------------------------------
class _Pending:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.answer: dict | None = None  # None once done: the fetcher went away first


class FetcherClient:
    """Sends misses to the fetcher and matches its answers to the leaders waiting for them."""

    def __init__(self, sock: socket.socket, pid: int, on_lost: Callable[[int], None]):
        self.pid = pid
        self._sock = sock
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count()
        self._lost = False
        self._on_lost = on_lost
        threading.Thread(target=self._read_answers, name="fetcher-answers", daemon=True).start()

    def resolve(self, key: str, fetch: UpstreamFetch, deadline: float) -> tuple[Link, bool]:
        """`LinkBroker.resolve_miss`, run by the fetcher; `ResolverGone` when the fetcher cannot take it."""
        pending = _Pending()
        with self._pending_lock:
            if self._lost:
                raise ResolverGone()
            ident = next(self._ids)
            self._pending[ident] = pending
        request = {
            "id": ident,
            "key": key,
            "user": fetch.user,
            "profile_key": fetch.profile_key,
            "options": asdict(fetch.options),
            "deadline": deadline,
        }
        try:
            with self._send_lock:
                self._sock.sendall(_line(request))
        except OSError:
            self._lose()
            raise ResolverGone() from None
        if not pending.done.wait(max(0.0, deadline - time.monotonic()) + ANSWER_GRACE_SECONDS):
            with self._pending_lock:
                self._pending.pop(ident, None)
            raise UpstreamTimeout()
        if pending.answer is None:
            raise ResolverGone()
        return _outcome(pending.answer, fetch)

    def close(self, timeout: float) -> None:
        """The worker is exiting: let the fetcher finish what it started (bounded by `timeout`), then reap it."""
        with self._pending_lock:
            self._lost = True  # an exit on purpose: no `on_lost`
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)  # the fetcher reads the end of its requests
        try:
            ends = time.monotonic() + timeout
            while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
                if time.monotonic() >= ends:
                    os.kill(self.pid, signal.SIGKILL)
                    os.waitpid(self.pid, 0)
                    break
                time.sleep(0.05)
        except ChildProcessError:
            pass  # reaped already, when it was lost
        self._sock.close()

    def _read_answers(self) -> None:
        try:
            with self._sock.makefile("rb") as answers:
                for line in answers:
                    answer = json.loads(line)
                    with self._pending_lock:
                        pending = self._pending.pop(answer["id"], None)
                    if pending is not None:
                        pending.answer = answer
                        pending.done.set()
        except (OSError, ValueError, KeyError):
            pass  # a broken stream is a lost fetcher, below
        self._lose()

    def _lose(self) -> None:
        with self._pending_lock:
            if self._lost:
                lost_now = False
            else:
                self._lost = lost_now = True
            waiting, self._pending = list(self._pending.values()), {}
        for pending in waiting:
            pending.done.set()  # with no answer: each leader resolves its miss itself
        if lost_now:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, os.WNOHANG)  # reap it if it has exited, so no zombie stays behind
            self._on_lost(self.pid)


def _outcome(answer: dict, fetch: UpstreamFetch) -> tuple[Link, bool]:
    if fetch.timings is not None:
        fetch.timings.upstream_seconds = answer.get("upstream_seconds")
    if answer.get("error") is not None:
        raise ServiceError.from_public_fields(answer["error"])
    link = answer["link"]
    return Link(url=link["url"], expires_at=link["expires_at"], source=link["source"]), bool(answer["held"])


# -- the fetcher's side --------------------------------------------------------------------------------------------
def serve(sock: socket.socket, service: ConnectService, threads: int) -> None:
    """Resolve each miss the worker sends, up to `threads` at once, until the worker closes its end."""
    send_lock = threading.Lock()
    # Leaving the `with` waits for the calls already started: their links are stored for every worker.
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch") as pool, sock.makefile("rb") as requests:
        for line in requests:
            pool.submit(_resolve_and_answer, sock, send_lock, service, json.loads(line))


def _resolve_and_answer(sock: socket.socket, send_lock: threading.Lock, service: ConnectService, request: dict) -> None:
    timings = Timings()
    options = request["options"]
    options = LinkOptions(
        allowed_social=tuple(options["allowed_social"]), redirect=options["redirect"], expires_in=options["expires_in"]
    )
    fetch = UpstreamFetch(service, request["user"], request["profile_key"], options, timings)
    answer: dict = {"id": request["id"]}
    try:
        link, held = service.broker.resolve_miss(request["key"], fetch, request["deadline"])
        answer["link"] = {"url": link.url, "expires_at": link.expires_at, "source": link.source}
        answer["held"] = held
    except ServiceError as error:
        answer["error"] = error.public_fields()
    except Exception:  # noqa: BLE001 - the worker answers 500, as it would had the error happened there
        log.exception("unhandled error in the upstream fetcher")
        answer["error"] = ServiceError().public_fields()
    answer["upstream_seconds"] = timings.upstream_seconds
    try:
        with send_lock:
            sock.sendall(_line(answer))
    except OSError:
        pass  # the worker is gone; the link, if any, is in the store for the others


def _line(message: dict) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
