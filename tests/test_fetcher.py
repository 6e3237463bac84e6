"""The fetcher process (service/fetcher.py): misses resolved beside the worker, with the same answers and no loss when
either process dies.

The first tests run both sides in this process (a socketpair, the fetcher's loop in a thread, two apps as a forked
worker and fetcher would have): the protocol and both sides' code, without forking pytest. The rest fork for real,
under gunicorn with the production config.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from service import create_app, fetcher
from service.callers import signed_path
from service.connect import Timings, UpstreamFetch
from service.errors import UpstreamTimeout
from service.fetcher import FetcherClient, serve
from service.links import LinkOptions
from tests.conftest import API_KEY, SIGNING_SECRET
from tests.support.processes import wait_until
from tests.test_metrics import scrape, value

STARTED = re.compile(r"Worker (\d+): upstream fetcher process (\d+) started")
JSON = {"Accept": "application/json"}


class Pair:
    """A worker app whose misses go over a socketpair to a fetcher loop (`serve`) running a second app."""

    def __init__(self, settings_env: dict, fake_fetcher=None):
        self.worker_app = create_app(settings_env)
        self.fetcher_app = create_app(settings_env)
        self.worker_end, self.fetcher_end = socket.socketpair()
        self.lost: list[int] = []
        service = self.fetcher_app.extensions["connect"]
        target = fake_fetcher or (lambda sock: serve(sock, service, 4))
        threading.Thread(target=target, args=(self.fetcher_end,), daemon=True).start()
        # Our own pid stands in for the fetcher's: never a child of ours, so reaping it finds nothing.
        self.client = FetcherClient(self.worker_end, os.getpid(), self.lost.append)
        self.worker_app.extensions["connect"].broker.miss_resolver = self.client.resolve

    def get(self, user: str, **headers: str):
        return self.worker_app.test_client().get(signed_path(user, SIGNING_SECRET), headers=headers)

    def kill_fetcher(self) -> None:
        self.fetcher_end.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def pair(settings_env):
    made = Pair(settings_env)
    yield made
    made.worker_end.close()


def test_a_miss_goes_through_the_fetcher_and_the_worker_keeps_the_link(pair, emulator):
    first = pair.get("alice", **JSON)

    assert first.status_code == 200 and first.json["cached"] is False
    assert emulator.calls() == 1
    # The fetcher's own broker made the call and stored the link: the worker was told, and keeps a copy.
    pair.kill_fetcher()
    wait_until(lambda: pair.lost, 5, what="the worker to see the fetcher gone")
    again = pair.get("alice", **JSON)
    assert again.status_code == 200 and again.json["url"] == first.json["url"] and again.json["cached"] is True
    assert emulator.calls() == 1


def test_a_burst_in_the_worker_sends_the_fetcher_one_miss(pair, emulator):
    emulator.set_knobs(latency_ms=300)
    with ThreadPoolExecutor(max_workers=20) as pool:
        answers = list(pool.map(lambda _: pair.get("bob"), range(20)))

    assert [a.status_code for a in answers] == [302] * 20
    assert len({a.headers["Location"] for a in answers}) == 1
    assert emulator.calls() == 1


def test_the_fetcher_spends_a_leaders_request_limit_first_and_a_refused_one_never_reaches_ayrshare(
    settings_env, emulator, redis_client
):
    pair = Pair({**settings_env, "RATE_LIMIT_PER_USER": "1/minute"})
    worker = pair.worker_app.extensions["connect"]
    spent_in_the_worker = []
    spend = worker.spend_request_budget
    worker.spend_request_budget = lambda user: spent_in_the_worker.append(user) or spend(user)
    assert pair.get("alice").status_code == 302  # the leader: admitted by the fetcher, then its call
    for key in redis_client.scan_iter("connect:link:*"):  # the link gone, so the next request leads a miss again
        redis_client.delete(key)
    for app in (pair.worker_app, pair.fetcher_app):
        app.extensions["connect"].broker._copies.clear()

    refused = pair.get("alice", **JSON)

    assert refused.status_code == 429 and refused.json["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) >= 1
    assert emulator.calls() == 1
    assert spent_in_the_worker == []  # both requests led a miss: their limit was spent in the fetcher
    pair.worker_end.close()


def test_an_upstream_failure_reaches_the_caller_exactly_as_without_a_fetcher(pair, settings_env, emulator):
    emulator.set_knobs(fault="429", fault_count=-1)
    plain = create_app(settings_env).test_client().get(signed_path("carol@example.com", SIGNING_SECRET), headers=JSON)
    emulator.set_knobs(fault="429", fault_count=-1)
    through_fetcher = pair.get("user1", **JSON)

    assert plain.status_code == through_fetcher.status_code == 503
    assert through_fetcher.json == plain.json
    assert through_fetcher.headers["Retry-After"] == plain.headers["Retry-After"]
    assert API_KEY not in through_fetcher.get_data(as_text=True)


def test_the_upstream_time_comes_back_for_the_request_log(pair, emulator):
    emulator.set_knobs(latency_ms=150)
    service = pair.worker_app.extensions["connect"]
    timings = Timings()
    fetch = UpstreamFetch(service, "alice", "PK-ALICE-0001", LinkOptions(), timings)

    link, held = pair.client.resolve("connect:link:v1:test-upstream-time", fetch, time.monotonic() + 10)

    assert link.source == "upstream" and held is True
    assert timings.upstream_seconds is not None and timings.upstream_seconds >= 0.15


def test_with_the_fetcher_gone_the_worker_resolves_misses_itself(pair, emulator):
    pair.kill_fetcher()
    wait_until(lambda: pair.lost, 5, what="the worker to see the fetcher gone")

    answers = [pair.get(user) for user in ("alice", "bob", "alice")]

    assert [a.status_code for a in answers] == [302] * 3
    assert emulator.calls() == 2
    assert pair.lost == [os.getpid()]  # told once


def test_a_fetcher_that_dies_while_a_miss_waits_costs_that_request_nothing(settings_env, emulator):
    def dies_after_reading_one(sock: socket.socket) -> None:
        sock.makefile("rb").readline()
        sock.shutdown(socket.SHUT_RDWR)

    dying = Pair(settings_env, fake_fetcher=dies_after_reading_one)

    answer = dying.get("alice")

    assert answer.status_code == 302
    assert emulator.calls() == 1  # made by the worker itself, once the fetcher was gone
    assert len(dying.lost) == 1


def test_a_fetcher_that_never_answers_is_given_up_just_after_the_deadline(settings_env, emulator, monkeypatch):
    monkeypatch.setattr(fetcher, "ANSWER_GRACE_SECONDS", 0.2)
    hung = Pair(settings_env, fake_fetcher=lambda sock: sock.makefile("rb").readline())
    service = hung.worker_app.extensions["connect"]
    service.broker.request_seconds = 0.3
    fetch = UpstreamFetch(service, "alice", "PK-ALICE-0001", LinkOptions(), None)

    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):  # past the deadline, the leader's own attempt is a 504 (or a stale link)
        service.broker.get_link("connect:link:v1:test-hung", fetch)

    assert 0.5 <= time.monotonic() - started < 2
    assert hung.lost == [os.getpid()]  # a fetcher that misses a deadline is stuck: the worker will be replaced
    assert emulator.calls() == 0


def test_a_fetcher_that_stops_reading_is_given_up_instead_of_blocking_leaders(settings_env, emulator, monkeypatch):
    monkeypatch.setattr(fetcher, "SEND_TIMEOUT_SECONDS", 0.3)
    stuck = Pair(settings_env, fake_fetcher=lambda sock: time.sleep(30))  # never reads a byte
    service = stuck.worker_app.extensions["connect"]
    # A hand-off far larger than the socket's buffers stands in for many small ones the fetcher left unread.
    fetch = UpstreamFetch(service, "alice", "x" * 4_000_000, LinkOptions(), None)

    started = time.monotonic()
    with pytest.raises(fetcher.ResolverGone):
        stuck.client.resolve("connect:link:v1:test-stuck", fetch, started + 10)

    assert time.monotonic() - started < 3
    assert stuck.lost == [os.getpid()]


def test_an_unreadable_answer_counts_as_a_lost_fetcher_and_costs_the_request_nothing(settings_env, emulator):
    def garbles(sock: socket.socket) -> None:
        sock.makefile("rb").readline()
        sock.sendall(b"not an answer\n")

    garbled = Pair(settings_env, fake_fetcher=garbles)

    answer = garbled.get("alice")

    assert answer.status_code == 302 and emulator.calls() == 1
    assert garbled.lost == [os.getpid()]


# -- under gunicorn -----------------------------------------------------------------------------------------------
def fetchers(service) -> dict[int, int]:
    """{worker pid: fetcher pid} for every fetcher the log says was started."""
    return {int(worker): int(child) for worker, child in STARTED.findall(service.log())}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ")[1][0] != "Z"


def kill_fetchers_then_ask_for_new_users(service, fetcher_pids) -> list[int]:
    """SIGKILL the fetchers, then the statuses of six requests for users nobody asked for yet (each one a miss)."""
    for child in fetcher_pids:
        os.kill(child, signal.SIGKILL)
    return [
        requests.get(
            service.url + signed_path(f"user{i}", SIGNING_SECRET), allow_redirects=False, timeout=10
        ).status_code
        for i in range(6)
    ]


def test_each_gthread_worker_gets_a_fetcher_of_its_own(start_service, emulator):
    service = start_service(workers=2)
    wait_until(lambda: len(fetchers(service)) == 2, 30, what="both fetchers")

    for worker, child in fetchers(service).items():
        with open(f"/proc/{child}/stat") as stat:
            assert int(stat.read().split(") ")[1].split()[1]) == worker  # the fetcher's parent is its worker
    emulator.set_knobs(latency_ms=300)
    with ThreadPoolExecutor(max_workers=30) as pool:
        url = service.url + signed_path("alice", SIGNING_SECRET)
        answers = list(pool.map(lambda _: requests.get(url, allow_redirects=False, timeout=10), range(30)))
    assert [a.status_code for a in answers] == [302] * 30
    assert len({a.headers["Location"] for a in answers}) == 1
    assert emulator.calls() == 1


def test_a_fetcher_killed_right_after_start_is_not_restarted_in_a_loop(start_service, emulator):
    service = start_service(workers=2)
    wait_until(lambda: len(fetchers(service)) == 2, 30, what="both fetchers")
    first = fetchers(service)

    assert kill_fetchers_then_ask_for_new_users(service, first.values()) == [302] * 6
    wait_until(lambda: service.log().count("misses run in the worker from now on") == 2, 10, what="both workers")
    assert all(alive(worker) for worker in first)  # within EARLY_LOSS_SECONDS: no restart
    assert fetchers(service) == first


def test_a_killed_fetcher_loses_no_request_and_its_worker_is_replaced(start_service, emulator):
    service = start_service(workers=2)
    wait_until(lambda: len(fetchers(service)) == 2, 30, what="both fetchers")
    first = fetchers(service)
    time.sleep(fetcher.EARLY_LOSS_SECONDS + 0.5)  # a fetcher that ran a while: losing it is worth a new worker

    assert kill_fetchers_then_ask_for_new_users(service, first.values()) == [302] * 6
    assert "lost its upstream fetcher" in service.log() and "the worker restarts" in service.log()
    wait_until(lambda: len(fetchers(service)) == 4, 30, what="replacement workers with fetchers of their own")
    wait_until(lambda: not any(alive(worker) for worker in first), 30, what="the old workers to exit")
    fresh = service.url + signed_path("user20", SIGNING_SECRET)
    assert requests.get(fresh, allow_redirects=False, timeout=10).status_code == 302


def test_a_fetcher_exits_with_its_worker_and_none_outlives_the_service(start_service, emulator):
    service = start_service(workers=2)
    wait_until(lambda: len(fetchers(service)) == 2, 30, what="both fetchers")
    (worker, child), (_, other_child) = fetchers(service).items()

    os.kill(worker, signal.SIGKILL)
    wait_until(lambda: not alive(child), 10, what="the killed worker's fetcher to exit")

    assert alive(other_child)
    service.stop()
    assert not any(alive(pid) for pid in fetchers(service).values())


@pytest.mark.parametrize(
    "setting", [{"UPSTREAM_FETCHER": "0"}, {"REDIS_URL": ""}], ids=["turned-off", "in-process-store"]
)
def test_misses_stay_in_the_workers_when_turned_off_or_without_redis(start_service, emulator, setting):
    service = start_service(workers=2, **setting)

    answer = requests.get(service.url + signed_path("alice", SIGNING_SECRET), allow_redirects=False, timeout=10)

    assert answer.status_code == 302 and emulator.calls() == 1
    assert fetchers(service) == {}


def test_an_unreadable_upstream_fetcher_setting_stops_the_start_naming_it(start_service):
    service = start_service(wait=False, UPSTREAM_FETCHER="sometimes")

    assert service.proc.wait(30) == 2
    assert "configuration error: UPSTREAM_FETCHER: must be 1 or 0" in service.log()
    assert "sometimes" not in service.log()


def test_the_circuit_state_metric_is_the_fetchers_breaker(start_service, emulator):
    service = start_service(workers=1, CIRCUIT_FAILURE_THRESHOLD="2", CIRCUIT_COOLDOWN_SECONDS="60")
    wait_until(lambda: len(fetchers(service)) == 1, 30, what="the fetcher")
    prefix = "ayrshare_connect_circuit_state"
    assert value(scrape(service.url), prefix, state="closed") == 1  # the worker reports zeros, the fetcher closed

    emulator.set_knobs(fault="500", fault_count=-1)
    for i in range(3):
        requests.get(service.url + signed_path(f"user{i}", SIGNING_SECRET), allow_redirects=False, timeout=20)

    scraped = scrape(service.url)
    assert value(scraped, prefix, state="open") == 1
    assert value(scraped, prefix, state="closed") == 0  # not still 1 from the worker's unused breaker
