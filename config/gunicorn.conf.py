"""gunicorn settings for ayrshare-connect (read with `gunicorn -c config/gunicorn.conf.py 'service:create_app()'`).

The service is I/O-bound: most of a cold request is spent waiting on Ayrshare, so workers must keep serving
cache hits while others wait. Worker model, counts and timeouts come from the environment with defaults chosen by
measurement (see BENCHMARKS.md). Command-line flags such as `--workers` and `--bind` override this file.
"""

import os
import sys

from service.settings import ConfigError, load_settings


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "")
    if not value:
        return default
    try:
        return int(value)
    except ValueError:
        sys.stderr.write(f"configuration error: {name}: must be an integer\n")
        sys.exit(2)


bind = os.environ.get("BIND", "0.0.0.0:8000")
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "gthread")
workers = _env_int("GUNICORN_WORKERS", 2)
threads = _env_int("GUNICORN_THREADS", 32)
# A request is bounded by the upstream deadline (AYRSHARE_DEADLINE_SECONDS, at most 30 s) plus a single-flight wait
# of the same order; the worker timeout sits above both so gunicorn never kills a worker that is merely waiting.
timeout = _env_int("GUNICORN_TIMEOUT", 75)
graceful_timeout = _env_int("GUNICORN_GRACEFUL_TIMEOUT", 30)
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


def on_starting(server):
    """Validate the configuration once, in the master, so a bad setting is one clear line and exit code 2."""
    try:
        load_settings()
    except ConfigError as error:
        sys.stderr.write(f"configuration error: {error}\n")
        sys.exit(2)
