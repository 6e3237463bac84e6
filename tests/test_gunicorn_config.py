"""What config/gunicorn.conf.py does to each worker beyond gunicorn's own settings."""

from __future__ import annotations

import re

from tests.support.processes import wait_until

FROZEN = re.compile(r"Worker \d+: (\d+) objects made at start frozen")


def test_each_worker_freezes_what_it_loaded_at_start_out_of_garbage_collection(start_service):
    """Full collections walking the app's own objects paused cold bursts by 45-100 ms (BENCHMARKS.md, scenario 2)."""
    service = start_service(workers=2)

    wait_until(lambda: len(FROZEN.findall(service.log())) == 2, 30, what="both workers to have started")

    frozen = [int(count) for count in FROZEN.findall(service.log())]
    # Flask, requests, redis-py, cryptography and the app itself: tens of thousands of objects, not a handful.
    assert all(count > 10_000 for count in frozen), frozen
