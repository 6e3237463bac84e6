"""gunicorn settings for ayrshare-connect (read with `gunicorn -c config/gunicorn.conf.py 'service:create_app()'`).

The service is I/O-bound: most of a cold request is spent waiting on Ayrshare, so workers must keep serving
cache hits while others wait. Worker model, counts and timeouts come from the environment with defaults chosen by
measurement (see BENCHMARKS.md). Command-line flags such as `--workers` and `--bind` override this file.
"""

import os

# gevent must patch the standard library before ssl, sockets and locks are imported, but the imports below
# (prometheus-client, and the service package with requests, urllib3 and redis) run here in the master, before
# gunicorn's gevent worker would patch them (its MonkeyPatchWarning says so). So patch first, when gevent is chosen.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
if "gevent" in worker_class:
    from gevent import monkey

    monkey.patch_all()

import fcntl  # noqa: E402
import gc  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

# Metrics across workers (prometheus-client multiprocess mode): every process writes its values under
# PROMETHEUS_MULTIPROC_DIR, and prometheus-client picks that mode when it is first imported — which the `service`
# import below does — so the directory must be in the environment first. Unset: a fresh one in /dev/shm (RAM),
# removed at exit. Set (e.g. a volume): its old files are wiped at start, as prometheus-client requires.
_METRICS_DIR_PREFIX = "ayrshare-connect-metrics-"
# A master killed without its exit hook (kill -9, OOM) leaves its directory behind, a few MB of RAM in /dev/shm each.
# Each directory holds a lock file that its master locks (flock) for as long as it or any worker it forked runs, so a
# later start can tell an abandoned directory from a live one, in whatever PID namespace either runs; a PID could not.
_OWNER_LOCK = ".owner.lock"
_SWEEP_MIN_AGE_SECONDS = 60  # a directory this young may belong to a master that has not locked it yet


def _sweep_abandoned_metrics_dirs(parent: Path) -> None:
    """Remove our metrics directories in `parent` whose owner lock nobody holds (their master and workers are gone)."""
    for candidate in parent.glob(_METRICS_DIR_PREFIX + "*"):
        lock_path = candidate / _OWNER_LOCK
        try:
            if not lock_path.is_file() or time.time() - candidate.stat().st_mtime < _SWEEP_MIN_AGE_SECONDS:
                continue  # made before owner locks existed, or too new to judge: left alone
            with open(lock_path) as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked by a live owner (BlockingIOError), or gone meanwhile
            continue
        shutil.rmtree(candidate, ignore_errors=True)


def _lock_as_owner(directory: Path):
    """Hold the directory's owner lock until this process and every worker forked from it have exited."""
    handle = open(directory / _OWNER_LOCK, "w")  # noqa: SIM115 - kept open on purpose: the lock lives with it
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


_owner_lock = None
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    _sweep_abandoned_metrics_dirs(Path(_shm or tempfile.gettempdir()))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix=_METRICS_DIR_PREFIX, dir=_shm)
    _owner_lock = _lock_as_owner(Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
METRICS_DIR = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])

from prometheus_client import CollectorRegistry, multiprocess, start_http_server  # noqa: E402

from service.settings import ConfigError, load_settings  # noqa: E402


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        sys.stderr.write(f"configuration error: {name}: must be an integer\n")
        sys.exit(2)


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name, "").strip().lower()
    if not value:
        return default
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    sys.stderr.write(f"configuration error: {name}: must be 1 or 0 (or true/false, yes/no, on/off)\n")
    sys.exit(2)


bind = os.environ.get("BIND", "0.0.0.0:8000")
workers = _env_int("GUNICORN_WORKERS", 2)
# 2 x 128 threads hold 200+ slow upstream calls in flight at once (BENCHMARKS.md, scenario 3: 32 threads capped a
# 1 s upstream at ~57 req/s; 128 matched gevent). On cache hits gthread kept p99 at a quarter of gevent's (scenario 1),
# and it needs no monkey patching.
threads = _env_int("GUNICORN_THREADS", 128)
# A request is bounded by the upstream deadline (AYRSHARE_DEADLINE_SECONDS, at most 30 s) plus a single-flight wait
# of the same order; the worker timeout sits above both so gunicorn never kills a worker that is merely waiting.
timeout = _env_int("GUNICORN_TIMEOUT", 75)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
# Each gthread worker resolves its cache misses in a fetcher process of its own (service/fetcher.py): a burst's one
# upstream call then leaves without queueing behind the burst for the worker's interpreter lock (BENCHMARKS.md,
# scenario 2). 0: misses run in the worker's threads.
upstream_fetcher = _env_flag("UPSTREAM_FETCHER", True)
keepalive = _env_int("GUNICORN_KEEPALIVE", 5)
backlog = _env_int("GUNICORN_BACKLOG", 2048)
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1")

# The service writes its own JSON request line (with cache outcome and request id); gunicorn's access log would
# repeat it and, by default, print query strings, which carry link signatures. Opt in with GUNICORN_ACCESS_LOG=1.
accesslog = "-" if os.environ.get("GUNICORN_ACCESS_LOG") == "1" else None
access_log_format = (
    '{"ts":"%(t)s","method":"%(m)s","path":"%(U)s","status":%(s)s,"bytes":%(B)s,'
    '"duration_us":%(D)s,"request_id":"%({x-request-id}o)s"}'
)
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


_metrics_bind = None


def on_starting(server):
    """Validate the configuration once, in the master, so a bad setting is one clear line and exit code 2."""
    global _metrics_bind
    try:
        settings = load_settings()
    except ConfigError as error:
        sys.stderr.write(f"configuration error: {error}\n")
        on_exit(server)  # gunicorn runs no exit hook when a start hook exits: our metrics directory goes here
        sys.exit(2)
    _metrics_bind = settings.metrics_bind
    METRICS_DIR.mkdir(parents=True, exist_ok=True)
    for stale in METRICS_DIR.glob("*.db"):  # counters of a previous run would otherwise be added to ours
        stale.unlink(missing_ok=True)


def when_ready(server):
    """METRICS_BIND set: serve the workers' summed metrics from the master, on that address only."""
    if not _metrics_bind:
        return
    host, _, port = _metrics_bind.rpartition(":")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(METRICS_DIR))
    try:
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    except OSError as error:
        sys.stderr.write(f"configuration error: METRICS_BIND: cannot listen there ({error.strerror})\n")
        on_exit(server)
        sys.exit(2)
    server.log.info("Serving metrics on http://%s/metrics", _metrics_bind)


def post_worker_init(worker):
    """Size the pool of connections to Ayrshare to the worker's concurrency, take what the loaded app keeps for its
    whole life (modules, settings, clients, compiled patterns) out of the cyclic garbage collector's walks, then start
    the worker's fetcher (`_start_fetcher`).

    Every full collection walks every tracked object. On a cold burst those walks (45-100 ms each, holding the GIL)
    ran while a hundred requests and the one upstream call waited (BENCHMARKS.md, scenario 2). Frozen objects are
    never collected, which costs nothing here: they live until the worker exits anyway. Objects made afterwards,
    including every request's, are collected as before.
    """
    service = getattr(worker.wsgi, "extensions", {}).get("connect")  # None for another app (the bench's bare one)
    if service is not None:
        service.client.size_pool(_requests_at_once(worker))
    gc.collect()  # what loading the app left for collection goes now, rather than into the frozen set for good
    gc.freeze()
    worker.log.info(
        "Worker %s: %d objects made at start frozen out of garbage collection", worker.pid, gc.get_freeze_count()
    )
    if service is not None:
        _start_fetcher(worker, service)  # after the freeze, so the fetcher's copy of the app is frozen too


def _requests_at_once(worker) -> int:
    """How many requests this worker can hold at once (and so how many upstream calls, its fetcher's included)."""
    from gunicorn.workers.gthread import ThreadWorker

    if isinstance(worker, ThreadWorker):
        return worker.cfg.threads
    if "gevent" in worker_class:
        return worker.cfg.worker_connections
    return 1


_fetcher = None  # this worker's FetcherClient, when it has one
_fetcher_started = 0.0  # monotonic


def _start_fetcher(worker, service) -> None:
    """Give a gthread worker running the service with a Redis store its fetcher (service/fetcher.py).

    Not for the sync worker (one request at a time: nothing to queue behind) or gevent (one thread), nor for the
    in-process store (a fetcher would keep a second cache). A fork that fails leaves the worker serving on its own:
    an exception here would stop the whole server (gunicorn halts when a worker cannot boot).
    """
    global _fetcher, _fetcher_started
    from gunicorn.workers.gthread import ThreadWorker

    from service.fetcher import start_fetcher

    if not upstream_fetcher or not service.settings.redis_url:
        return
    if not isinstance(worker, ThreadWorker):
        return
    try:
        _fetcher = start_fetcher(
            service, worker.cfg.threads, on_lost=lambda pid: _fetcher_lost(worker, pid), close_in_fetcher=worker.sockets
        )
    except (OSError, RuntimeError) as error:
        reason = getattr(error, "strerror", None) or type(error).__name__
        worker.log.error("Worker %s: no upstream fetcher (%s); misses run in the worker", worker.pid, reason)
        return
    _fetcher_started = time.monotonic()
    worker.log.info("Worker %s: upstream fetcher process %s started", worker.pid, _fetcher.pid)


def _fetcher_lost(worker, pid: int) -> None:
    """The fetcher is gone or stuck: this worker's misses run in its own threads now, and gunicorn replaces the
    worker (after the requests in flight) with one that has a fetcher again, unless the fetcher did not last
    EARLY_LOSS_SECONDS: then a replacement's would likely not either, and the worker carries on without one."""
    from service.fetcher import EARLY_LOSS_SECONDS

    early = time.monotonic() - _fetcher_started < EARLY_LOSS_SECONDS
    if not early:
        worker.alive = False
    worker.log.error(
        "Worker %s: lost its upstream fetcher %s; %s",
        worker.pid,
        pid,
        "misses run in the worker from now on" if early else "the worker restarts",
    )
    multiprocess.mark_process_dead(pid, path=str(METRICS_DIR))


def worker_exit(server, worker):
    """In the worker, on its way out: the fetcher finishes the calls it started, then is reaped."""
    if _fetcher is not None:
        _fetcher.close(timeout=graceful_timeout)
        multiprocess.mark_process_dead(_fetcher.pid, path=str(METRICS_DIR))


def child_exit(server, worker):
    """A worker is gone (stopped, recycled or crashed): drop its live gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(worker.pid, path=str(METRICS_DIR))


def on_exit(server):
    if METRICS_DIR.name.startswith(_METRICS_DIR_PREFIX):  # ours, made above: nobody else reads it
        shutil.rmtree(METRICS_DIR, ignore_errors=True)
