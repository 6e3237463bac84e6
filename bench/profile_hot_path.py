"""Profile the cache-hit path in-process with pyinstrument: `python -m bench --scenario profile`.

The app is built exactly as gunicorn builds it (`create_app()` with the production settings, a real redis-server and
the emulator), one link is cached, then the same signed `/connect/<user>` request goes through the WSGI callable
`rounds` times under the profiler. Calling the WSGI app directly leaves out gunicorn and the socket, so what remains
is the service's own per-request work: routing, auth, the cache read, logging, rate limiting, metrics.
Writes bench/results/profile.txt and profile.html.
"""

from __future__ import annotations

import contextlib
import io
import os
import time

from werkzeug.test import EnvironBuilder

from . import bare_app, report
from .stack import Stack, user_name


def service_app_and_request(stack: Stack) -> tuple:
    """The service app as gunicorn builds it (`create_app()`, production settings, this stack's Redis and emulator) and
    the WSGI environ of one signed `/connect/<user>` request for the stack's first user."""
    os.environ.setdefault("ENV_FILE", "/nonexistent/.env")
    from service import create_app

    app = create_app(stack.service_env(LOG_LEVEL="INFO"))
    builder = EnvironBuilder(
        path=stack.signed_path(user_name(0)),
        base_url="http://127.0.0.1:8000",
        environ_base={"REMOTE_ADDR": "127.0.0.1"},
    )
    return app, builder.get_environ()


def call_wsgi(wsgi_app, template: dict) -> str:
    """One request through a WSGI callable, body read to the end; returns the status line."""
    environ = dict(template)
    environ["wsgi.input"] = io.BytesIO(b"")
    status = []
    body = wsgi_app(environ, lambda s, h, exc_info=None: status.append(s))
    b"".join(body)
    return status[0]


def profile(quick: bool = False) -> dict:
    from pyinstrument import Profiler

    rounds = 300 if quick else 5000
    with Stack(users=1) as stack, contextlib.ExitStack() as stack_exit:
        app, template = service_app_and_request(stack)
        # The request log stays on (it is part of the hot path), written to /dev/null instead of the terminal: the
        # service's handler looks up sys.stdout on every write, so redirecting sys.stdout is what reaches it.
        log_sink = stack_exit.enter_context(open(os.devnull, "w"))  # noqa: SIM115 - closed by the ExitStack
        stack_exit.enter_context(contextlib.redirect_stdout(log_sink))

        bare = bare_app.create_app()

        def hit(wsgi_app=app) -> str:
            return call_wsgi(wsgi_app, template)

        first = hit()
        if not first.startswith("302"):
            raise RuntimeError(f"warm-up answered {first}")
        calls = stack.upstream_calls()
        # Unprofiled per-request cost next to the bare endpoint's, in alternating batches so a slow spell of this
        # shared machine lands on both; the best batch of each is the number that repeats.
        batches: dict[str, list[float]] = {"service": [], "bare": []}
        for _ in range(3 if quick else 9):
            for label, wsgi_app in (("service", app), ("bare", bare)):
                started = time.perf_counter()
                for _ in range(300):
                    hit(wsgi_app)
                batches[label].append((time.perf_counter() - started) / 300 * 1e6)
        per_request_us, bare_us = min(batches["service"]), min(batches["bare"])
        profiler = Profiler(interval=0.0002)
        profiler.start()
        for _ in range(rounds):
            hit()
        profiler.stop()
        if stack.upstream_calls() != calls:
            raise RuntimeError("the profiled requests were not all cache hits")
    report.RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    text = profiler.output_text(unicode=False, color=False, show_all=os.environ.get("PROFILE_SHOW_ALL") == "1")
    (report.RESULTS_DIR / "profile.txt").write_text(text)
    (report.RESULTS_DIR / "profile.html").write_text(profiler.output_html())
    print(
        f"\n## hot path profile ({rounds} cache hits through the WSGI app; unprofiled, best batch: {per_request_us:.0f}"
        f" us/request, bare endpoint {bare_us:.0f} us)"
    )
    print(text)
    return {"rounds": rounds, "per_request_us": per_request_us, "bare_us": bare_us}
