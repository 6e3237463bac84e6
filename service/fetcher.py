"""The fetcher: a process beside each gunicorn worker that resolves the worker's cache misses.

Why a second process. In a burst, a worker holds a hundred requests' threads, all queued for its one interpreter
lock. The request that has to reach Ayrshare — the leader of the burst's single flight — makes Redis round trips
before the call (the user's request limit, the claim, the upstream budget), and after each one it queues for the
lock again behind every other request of its worker, gunicorn accepting and parsing them included: the call left
25-100 ms into the burst, and all 200 requests waited for that on top of Ayrshare's own time (BENCHMARKS.md, scenario
2). The fetcher is forked from its worker once the app is loaded, so it has the same settings, clients and secrets,
and an interpreter of its own that is idle. The leader hands it the miss in one write and waits; the fetcher spends
the leader's request limit (`RATE_LIMIT_PER_USER`: a refused leader's answer is its own, see `LinkBroker.get_link`),
then runs exactly what the leader would have run (`LinkBroker.resolve_miss`: the claim or the store's copy of the
link, the upstream budget, the circuit breaker, the call, the store write) and answers. Spending the limit here rather
than in the worker took the last Redis round trip out of the worker before the call (BENCHMARKS.md, scenario 2).

What stays the same: every rule of the single-flight, the budget and the breaker (the same code runs, in the
fetcher; the circuit-state metric is the fetcher's), the request's deadline (both processes read the same monotonic
clock), the error a caller sees (status, code, message, Retry-After), and the upstream time in the request log. The
socket between the two is private to them (a socketpair); the links it carries are never logged.

When something goes wrong:
- The fetcher dies, stops reading (a write blocks for `SEND_TIMEOUT_SECONDS`), sends something unreadable, or misses
  an answer by `ANSWER_GRACE_SECONDS` past the request's deadline: it counts as lost. The worker's misses run in its
  own threads again, as without a fetcher (a leader already past its deadline gets a stale-but-valid link or a 504,
  as in-thread), and the worker asks gunicorn to replace it (a graceful exit), which brings a new fetcher. A fetcher
  lost within `EARLY_LOSS_SECONDS` of its start is not worth a restart loop: the worker carries on without one.
- The worker dies: the fetcher reads the end of its socket, finishes the calls it has started (their links are
  stored for everyone), drops any it had not, and exits. It ignores the signals a terminal or a process manager sends
  the whole group, so it never ends before its worker.
- The fork itself fails: the worker serves without a fetcher.

`start_fetcher` is called from `post_worker_init` in config/gunicorn.conf.py, for gthread workers with a Redis store
(`UPSTREAM_FETCHER=0` turns it off; with the in-process store a fetcher would keep a cache of its own).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from . import metrics
from .broker import LeaderRefused, ResolverGone
from .connect import ConnectService, Timings, UpstreamFetch
from .errors import ServiceError
from .links import Link, LinkOptions

log = logging.getLogger(__name__)

# The fetcher keeps the request's deadline itself; a leader waits this much longer only in case the fetcher hangs.
ANSWER_GRACE_SECONDS = 2.0
# A hand-off is a few hundred bytes; a fetcher that leaves them unread this long is stuck, and counts as lost.
SEND_TIMEOUT_SECONDS = 2.0
EARLY_LOSS_SECONDS = 10.0
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
    sys.stdout.flush()
    sys.stderr.flush()  # nothing buffered is written twice
    group_signals = {getattr(signal, name) for name in _GROUP_SIGNALS}
    # Held back across the fork, so that none reaches the child while it still has the worker's handlers.
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, group_signals)
    try:
        pid = os.fork()
    except OSError:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
        worker_end.close()
        fetcher_end.close()
        raise
    if pid == 0:
        _become_fetcher(fetcher_end, worker_end, service, threads, close_in_fetcher, previous_mask)
    signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)
    fetcher_end.close()

    def lost(fetcher_pid: int) -> None:
        metrics.set_circuit_state(service.breaker.state)  # the worker's own breaker guards its calls again
        on_lost(fetcher_pid)

    client = FetcherClient(worker_end, pid, lost)
    service.broker.miss_resolver = client.resolve
    metrics.set_circuit_state_elsewhere()  # the fetcher's breaker is the one that counts now
    return client


def _become_fetcher(sock, worker_end, service, threads, close_in_fetcher, signal_mask) -> None:
    """The child's whole life: it never returns."""
    status = 0
    try:
        worker_end.close()
        for listener in close_in_fetcher:
            listener.close()
        signal.set_wakeup_fd(-1)  # gunicorn's worker wakes its loop through a pipe: not ours to write to
        for name in _GROUP_SIGNALS:
            signal.signal(getattr(signal, name), signal.SIG_IGN)
        for name in ("SIGABRT", "SIGCHLD"):
            signal.signal(getattr(signal, name), signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, signal_mask)
        metrics.set_circuit_state("closed")  # this process's breaker, which has counted nothing yet
        serve(sock, service, threads)
    except BaseException:  # noqa: BLE001 - reported; the worker carries on without us
        log.exception("upstream fetcher failed")
        status = 1
    finally:
        metrics.forget_this_process()
        sys.stderr.flush()
        os._exit(status)  # never the worker's exit handlers: they belong to the worker


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
        # A write the fetcher leaves unread this long fails (the fetcher counts as lost) instead of blocking a leader,
        # and every leader queued behind it, for good. Set on the socket, not in Python: reads are not affected.
        seconds, fraction = divmod(SEND_TIMEOUT_SECONDS, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, struct.pack("ll", int(seconds), int(fraction * 1e6)))
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._pending_lock = threading.Lock()
        self._ids = itertools.count()
        self._lost = False
        self._closing = False
        self._on_lost = on_lost
        threading.Thread(target=self._read_answers, name="fetcher-answers", daemon=True).start()

    def resolve(self, key: str, fetch: UpstreamFetch, deadline: float, admit: bool = False) -> tuple[Link, bool]:
        """`LinkBroker.resolve_miss`, run by the fetcher, which first spends the user's request limit when `admit`
        (`LeaderRefused` if that refuses); `ResolverGone` when the fetcher cannot take it or did not answer in time
        (the broker then resolves the miss itself, within what is left of the deadline)."""
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
            "admit": admit,
        }
        try:
            with self._send_lock:
                self._sock.sendall(_line(request))
        except OSError:  # gone, or not reading (SEND_TIMEOUT_SECONDS)
            self._forget(ident)
            if not self._closing:  # while closing, only this request goes back to the worker
                self._lose()
            raise ResolverGone() from None
        if not pending.done.wait(max(0.0, deadline - time.monotonic()) + ANSWER_GRACE_SECONDS):
            self._forget(ident)
            log.error("upstream fetcher %s missed an answer's deadline: treated as lost", self.pid)
            self._lose()
            raise ResolverGone()
        if pending.answer is None:
            raise ResolverGone()
        return _outcome(pending.answer, fetch)

    def _forget(self, ident: int) -> None:
        with self._pending_lock:
            self._pending.pop(ident, None)

    def close(self, timeout: float) -> None:
        """The worker is exiting: let the fetcher finish what it started (bounded by `timeout`), then reap it."""
        with self._pending_lock:
            self._lost = self._closing = True  # an exit on purpose: no `on_lost`
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
        except OSError:
            pass  # the socket closed under us: a lost fetcher, below
        except Exception:  # noqa: BLE001 - an unreadable answer: the stream cannot be trusted any more
            log.exception("unreadable answer from the upstream fetcher")
        finally:
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
        error = ServiceError.from_public_fields(answer["error"])
        raise LeaderRefused(error) if answer.get("refused") else error
    return Link(**answer["link"]), bool(answer["held"])


# -- the fetcher's side --------------------------------------------------------------------------------------------
def serve(sock: socket.socket, service: ConnectService, threads: int) -> None:
    """Resolve each miss the worker sends, up to `threads` at once, until the worker closes its end."""
    send_lock = threading.Lock()
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")
    try:
        with sock.makefile("rb") as requests:
            for line in requests:
                try:
                    request = json.loads(line)
                except ValueError:  # a worker killed mid-write leaves half a line
                    request = None
                if not isinstance(request, dict):
                    log.error("unreadable request from the worker: skipped")
                    continue
                pool.submit(_resolve_and_answer, sock, send_lock, service, request)
    except ConnectionResetError:
        pass  # the worker died with answers unread: the same end of input
    finally:
        # Calls already started finish (their links are stored for every worker); any not started are dropped.
        pool.shutdown(wait=True, cancel_futures=True)


def _resolve_and_answer(sock: socket.socket, send_lock: threading.Lock, service: ConnectService, request: dict) -> None:
    timings = Timings()
    answer: dict = {"id": request.get("id")}
    try:
        fields = request["options"]
        options = LinkOptions(**{**fields, "allowed_social": tuple(fields["allowed_social"])})
        fetch = UpstreamFetch(service, request["user"], request["profile_key"], options, timings)
        if request.get("admit"):
            try:
                service.spend_request_budget(fetch.user)
            except ServiceError:
                answer["refused"] = True  # the leader's own limit: its waiters are not refused with it
                raise
        link, held = service.broker.resolve_miss(request["key"], fetch, request["deadline"])
        answer["link"] = asdict(link)
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
