"""What config/gunicorn.conf.py does to each worker beyond gunicorn's own settings."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from service.callers import signed_path
from tests.conftest import SIGNING_SECRET
from tests.support.processes import wait_until

FROZEN = re.compile(r"Worker \d+: (\d+) objects made at start frozen")


def test_each_worker_freezes_what_it_loaded_at_start_out_of_garbage_collection(start_service):
    """Full collections walking the app's own objects paused cold bursts by 45-100 ms (BENCHMARKS.md, scenario 2)."""
    service = start_service(workers=2)

    wait_until(lambda: len(FROZEN.findall(service.log())) == 2, 30, what="both workers to have started")

    frozen = [int(count) for count in FROZEN.findall(service.log())]
    # Flask, requests, redis-py, cryptography and the app itself: tens of thousands of objects, not a handful.
    assert all(count > 10_000 for count in frozen), frozen


def test_each_worker_keeps_a_connection_to_ayrshare_for_every_call_it_can_have_in_flight(start_service, emulator):
    """With requests' default pool (10 connections), a burst of 20 misses would close 10 connections after it, with a
    "Connection pool is full" warning each, and the next burst would open them again (TCP and TLS handshakes)."""
    service = start_service(workers=1, GUNICORN_THREADS="20")
    emulator.set_knobs(latency_ms=300)

    def status(user: str) -> int:
        url = service.url + signed_path(user, SIGNING_SECRET)
        return requests.get(url, allow_redirects=False, timeout=10).status_code

    for burst in (range(0, 20), range(20, 40)):  # 20 misses at once, twice, each for users nobody asked for yet
        with ThreadPoolExecutor(max_workers=20) as pool:
            assert list(pool.map(status, [f"user{i}" for i in burst])) == [302] * 20

    stats = emulator.stats()
    assert stats["generate_calls"] == 40
    assert stats["generate_connections"] <= 20, stats["generate_connections"]
    assert "Connection pool is full" not in service.log()
