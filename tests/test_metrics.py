"""`GET /metrics` under real gunicorn with several workers: counts summed across processes, cache results, upstream
outcomes and latency histogram, single-flight waits, Redis errors, stale serves, circuit state, METRICS_BIND."""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from service.web import metrics
from tests.conftest import INTERNAL_TOKEN
from tests.support.processes import free_port, wait_until

RUN_IN_BOTH_LINK_FLOWS = True  # each test that builds the service runs once per AYRSHARE_LINK_FLOW

BEARER = {"Authorization": f"Bearer {INTERNAL_TOKEN}"}
CONNECT_ROUTE = "/connect/<user>"
P = "ayrshare_connect_"


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(scraped: dict, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels` (e.g. over both link flows)."""
    wanted = frozenset(labels.items())
    return sum(v for (sample, have), v in scraped.items() if sample == name and wanted <= have)


def scrape(base_url: str) -> dict:
    response = requests.get(base_url + "/metrics", timeout=5)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return samples(response.text)


def connect(service, user: str) -> requests.Response:
    # A fresh connection per request (no session): nothing pins the requests to one worker.
    return requests.get(f"{service.url}/connect/{user}", headers=BEARER, allow_redirects=False, timeout=20)


def per_process_requests(metrics_dir: Path) -> dict[str, float]:
    """HTTP requests counted by each process, read straight from the multiprocess files."""
    counts = {}
    for path in metrics_dir.glob("counter_*.db"):
        merged = MultiProcessCollector.merge([str(path)], accumulate=True)
        total = sum(
            s.value for m in merged if m.name == P + "http_requests" for s in m.samples if s.name.endswith("_total")
        )
        counts[path.stem.split("_")[-1]] = total
    return counts


def test_counts_are_summed_over_every_worker(start_service, emulator, tmp_path):
    # Sync workers each serve one request at a time; with a slow upstream, concurrent requests must spread
    # over several workers, so the totals below can only be right if the scrape adds up every process.
    metrics_dir = tmp_path / "prom"
    metrics_dir.mkdir()
    service = start_service(workers=3, GUNICORN_WORKER_CLASS="sync", PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    wait_until(lambda: len(list(metrics_dir.glob("gauge_livemax_*.db"))) >= 3, 20, what="three booted workers")
    emulator.set_knobs(latency_ms=300)
    users = [f"user{i}" for i in range(6)]

    with ThreadPoolExecutor(len(users)) as pool:
        cold = list(pool.map(lambda user: connect(service, user), users))
    warm = [connect(service, user) for user in users * 2]

    assert [r.status_code for r in cold + warm] == [302] * 18, service.log()[-3000:]
    scraped = scrape(service.metrics_url)
    assert value(scraped, P + "http_requests_total", route=CONNECT_ROUTE, status="302") == 18
    assert value(scraped, P + "cache_lookups_total", result="miss") == 6
    assert value(scraped, P + "cache_lookups_total", result="hit") == 12
    assert value(scraped, P + "upstream_calls_total", outcome="ok") == 6 == emulator.calls()
    assert value(scraped, P + "upstream_call_duration_seconds_count") == 6
    assert value(scraped, P + "upstream_call_duration_seconds_bucket", le="+Inf") == 6
    assert value(scraped, P + "upstream_call_duration_seconds_sum") > 0
    assert value(scraped, P + "http_request_duration_seconds_count", route=CONNECT_ROUTE) == 18
    busy = [pid for pid, count in per_process_requests(metrics_dir).items() if count > 0]
    assert len(busy) >= 2, "the requests should have been served by several workers"
    # The scrape itself is not counted, and no request left a per-user label behind.
    assert not any(name == P + "http_requests_total" and ("route", "/metrics") in labels for name, labels in scraped)
    assert not any("user0" in str(labels) for _, labels in scraped)


def test_concurrent_cold_requests_wait_for_one_upstream_call(start_service, emulator):
    service = start_service(workers=2)
    emulator.set_knobs(latency_ms=800)

    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(lambda _: connect(service, "alice"), range(12)))

    assert [r.status_code for r in answers] == [302] * 12
    scraped = scrape(service.metrics_url)
    assert emulator.calls() == 1
    assert value(scraped, P + "upstream_calls_total", outcome="ok") == 1
    assert value(scraped, P + "single_flight_waits_total") >= 1
    results = {r: value(scraped, P + "cache_lookups_total", result=r) for r in metrics.CACHE_RESULTS.values()}
    assert results["miss"] == 1
    assert sum(results.values()) == 12


def test_upstream_failures_are_counted_by_outcome(start_service, emulator):
    service = start_service(workers=2)

    # Every call faults (fault_count -1): the client's own retry must not turn the failure into a success.
    emulator.set_knobs(fault="429", fault_count=-1)
    assert connect(service, "alice").status_code == 503
    emulator.set_knobs(fault="non_json", fault_count=-1)
    assert connect(service, "bob").status_code == 502
    assert connect(service, "nobody-here").status_code == 404

    scraped = scrape(service.metrics_url)
    assert value(scraped, P + "upstream_calls_total", outcome="upstream_rate_limited") == 1
    assert value(scraped, P + "upstream_calls_total", outcome="non_json") == 1  # malformed: which check failed
    assert value(scraped, P + "upstream_calls_total", outcome="ok") == 0
    assert value(scraped, P + "upstream_call_duration_seconds_count") == 2
    assert value(scraped, P + "http_requests_total", route=CONNECT_ROUTE, status="503") == 1
    assert value(scraped, P + "http_requests_total", route=CONNECT_ROUTE, status="502") == 1
    assert value(scraped, P + "http_requests_total", route=CONNECT_ROUTE, status="404") == 1


def test_stale_serves_are_counted(start_service, emulator):
    # Tokens live 70 s but a cached link must have 80 s left: the second request needs a new one, Ayrshare
    # rate-limits it, and the cached link (more than LINK_STALE_MIN_SECONDS left) is served stale.
    service = start_service(workers=1, LINK_MIN_REMAINING_SECONDS="80", LINK_STALE_MIN_SECONDS="15")
    emulator.set_knobs(token_lifetime_seconds=70)
    assert connect(service, "alice").status_code == 302
    emulator.set_knobs(fault="429", fault_count=-1)
    assert connect(service, "alice").status_code == 302

    scraped = scrape(service.metrics_url)
    assert value(scraped, P + "cache_lookups_total", result="miss") == 1
    assert value(scraped, P + "cache_lookups_total", result="stale") == 1
    assert value(scraped, P + "upstream_calls_total", outcome="upstream_rate_limited") == 1


def test_redis_errors_and_direct_fetches_are_counted(start_service, emulator):
    nothing_listens = f"redis://127.0.0.1:{free_port()}/0"
    service = start_service(workers=2, REDIS_URL=nothing_listens)

    assert connect(service, "alice").status_code == 302

    scraped = scrape(service.metrics_url)
    assert value(scraped, P + "redis_errors_total") >= 1
    assert value(scraped, P + "cache_lookups_total", result="bypass") == 1
    assert value(scraped, P + "upstream_calls_total", outcome="ok") == 1


@pytest.mark.parametrize("worker_class", ["gthread", "gevent"])
def test_metrics_bind_moves_the_endpoint_off_the_public_port(start_service, emulator, worker_class):
    # The master serves METRICS_BIND; with gevent workers the master is monkey-patched too, so both are checked.
    port = free_port()
    service = start_service(workers=2, METRICS_BIND=f"127.0.0.1:{port}", GUNICORN_WORKER_CLASS=worker_class)
    assert connect(service, "alice").status_code == 302

    assert requests.get(service.url + "/metrics", timeout=5).status_code == 404
    wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/metrics", timeout=1).ok, 10, what="the metrics port")
    scraped = scrape(f"http://127.0.0.1:{port}")
    assert value(scraped, P + "http_requests_total", route=CONNECT_ROUTE, status="302") == 1
    assert value(scraped, P + "cache_lookups_total", result="miss") == 1


@pytest.mark.parametrize("problem", ["not host:port", "port in use"])
def test_bad_metrics_bind_stops_the_start_with_one_line(start_service, emulator, problem):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        bind = "127.0.0.1:99999" if problem == "not host:port" else f"127.0.0.1:{taken.getsockname()[1]}"
        service = start_service(wait=False, METRICS_BIND=bind)
        assert service.proc.wait(30) == 2
    errors = [line for line in service.log().splitlines() if "configuration error" in line]
    assert len(errors) == 1 and errors[0].startswith("configuration error: METRICS_BIND:")


def test_metrics_are_off_the_public_port_by_default(settings_env):
    from service import create_app
    from service.config import load_settings

    settings_env = {name: value for name, value in settings_env.items() if name != "METRICS_BIND"}
    assert load_settings(settings_env).metrics_bind == "0.0.0.0:9100"  # gunicorn's master serves them there
    assert create_app(settings_env).test_client().get("/metrics").status_code == 404


def test_metrics_bind_main_serves_them_on_the_main_port(settings_env):
    from service import create_app

    response = create_app({**settings_env, "METRICS_BIND": "main"}).test_client().get("/metrics")
    assert response.status_code == 200 and P + "circuit_state" in response.get_data(as_text=True)


def test_circuit_state_is_one_hot(settings_env):
    from service import create_app

    client = create_app({**settings_env, "METRICS_BIND": "main"}).test_client()
    try:
        scraped = samples(client.get("/metrics").get_data(as_text=True))
        assert value(scraped, P + "circuit_state", state="closed") == 1
        metrics.set_circuit_state("open")
        scraped = samples(client.get("/metrics").get_data(as_text=True))
        assert value(scraped, P + "circuit_state", state="open") == 1
        assert value(scraped, P + "circuit_state", state="closed") == 0
        assert value(scraped, P + "circuit_state", state="half_open") == 0
        with pytest.raises(ValueError, match="unknown circuit state"):
            metrics.set_circuit_state("ajar")
    finally:
        metrics.set_circuit_state("closed")


def test_broker_events_feed_their_counters():
    before_waits = metrics.SINGLE_FLIGHT_WAITS._value.get()
    before_errors = metrics.REDIS_ERRORS._value.get()
    metrics.broker_event("wait")
    metrics.broker_event("redis_error")
    metrics.broker_event("something_new")  # unknown events are ignored, not an error
    assert metrics.SINGLE_FLIGHT_WAITS._value.get() == before_waits + 1
    assert metrics.REDIS_ERRORS._value.get() == before_errors + 1
