"""gunicorn settings for ayrshare-connect: `gunicorn -c config/gunicorn.conf.py 'service:create_app()'`.

Every value comes from the service's own validated settings (GUNICORN_*, BIND, ...; see docs/configuration.md), so
a bad setting stops the start with one line naming it. Command-line flags override this file.
"""

import contextlib
import os
import sys

from dotenv import dotenv_values

# gevent must patch the standard library before anything imports ssl or sockets, settings included; so this one
# choice is read first, from the process environment or else the settings file as load_settings reads them
# (python-dotenv imports neither), and validated below like every other setting.
_env_file = os.environ.get("ENV_FILE") or ".env"
_early = os.environ.get("GUNICORN_WORKER_CLASS")
# A file that cannot be read here is left to load_settings, below, which stops the start with one line.
with contextlib.suppress(OSError, UnicodeDecodeError):
    _early = _early or (dotenv_values(_env_file).get("GUNICORN_WORKER_CLASS") if os.path.isfile(_env_file) else None)
if _early == "gevent":
    from gevent import monkey

    monkey.patch_all()

from service.config import ConfigError, load_settings  # noqa: E402
from service.config.schema import METRICS_ON_MAIN_PORT  # noqa: E402

try:
    settings = load_settings()
except ConfigError as error:
    sys.stderr.write(f"configuration error: {error}\n")
    sys.exit(2)

from service.web import metrics_dir  # noqa: E402 - must set PROMETHEUS_MULTIPROC_DIR before prometheus-client loads

METRICS_DIR, _owner_lock = metrics_dir.prepare()

from prometheus_client import CollectorRegistry, multiprocess, start_http_server  # noqa: E402

from service.web import gunicorn_logging  # noqa: E402

worker_class = settings.worker_class
bind = settings.bind
workers = settings.workers
threads = settings.threads
worker_connections = settings.worker_connections
timeout = settings.worker_timeout
graceful_timeout = settings.graceful_timeout
keepalive = settings.keepalive
backlog = settings.backlog
forwarded_allow_ips = settings.forwarded_allow_ips
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
# The service writes its own JSON request line; gunicorn's access log would repeat it and print query strings, which
# carry link signatures. GUNICORN_ACCESS_LOG=1 turns it on, without query strings.
accesslog = "-" if settings.access_log else None
access_log_format = gunicorn_logging.ACCESS_LOG_FORMAT
errorlog = "-"
# gunicorn's own lines ("Booting worker", "Listening at", ...) as JSON with ISO 8601 timestamps, like the service's.
# A logger_class rather than logconfig_dict: with logconfig_dict gunicorn builds every request's access-log atoms
# even when the access log is off.
logger_class = gunicorn_logging.JsonLogger
loglevel = settings.log_level.lower()


def when_ready(server):
    """Say once if Redis does not answer; serve the workers' summed metrics on METRICS_BIND (unless "main")."""
    _check_redis(server)
    if settings.metrics_bind == METRICS_ON_MAIN_PORT:
        return
    host, _, port = settings.metrics_bind.rpartition(":")
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(METRICS_DIR))
    try:
        start_http_server(int(port), addr=host.strip("[]") or "0.0.0.0", registry=registry)
    except OSError as error:
        sys.stderr.write(f"configuration error: METRICS_BIND: cannot listen there ({error.strerror})\n")
        on_exit(server)
        sys.exit(2)
    server.log.info("Serving metrics on http://%s/metrics", settings.metrics_bind)


def _check_redis(server):
    # Once per start, in the master before any worker boots: each worker's own probe would say it once per worker,
    # and requests only notice it later (and then without saying where).
    if not settings.redis_url:
        return
    from service.config.connections import redis_address
    from service.links.store import REDIS_FAILURES, redis_client_from_url

    client = None
    try:
        client = redis_client_from_url(settings.redis_url, settings.redis_timeout)  # a Cluster client connects here
        client.ping()
    except REDIS_FAILURES as error:
        address = redis_address(settings.redis_url)
        if client is None:  # redis-py's Cluster client reads the slot map as it is made: workers could not start
            server.log.error("Redis Cluster at %s cannot be reached or refuses the connection: stopping", address)
            on_exit(server)
            sys.exit(1)
        server.log.warning(
            "Redis at %s does not answer (%s): serving without the shared cache until it does",
            address,
            type(error).__name__,
            extra={"redis": address, "error_type": type(error).__name__},
        )
    finally:
        if client is not None:
            client.close()


def child_exit(server, worker):
    """A worker is gone (stopped, recycled or crashed): drop its live gauges; its counters stay in the sums."""
    multiprocess.mark_process_dead(worker.pid, path=str(METRICS_DIR))


def on_exit(server):
    metrics_dir.remove(METRICS_DIR)
