"""The circuit breaker: unit table on a fake clock, then the real thing against the emulator."""

from __future__ import annotations

import pytest

from service import create_app
from service.auth import signed_path
from service.errors import UpstreamRefused, UpstreamTimeout, UpstreamUnavailable
from service.upstream.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, CircuitOpen
from tests.conftest import SIGNING_SECRET


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(error):
    def run():
        raise error

    return run


def test_opens_after_threshold_fails_fast_then_probes_once_and_closes():
    clock, states = Clock(), []
    breaker = CircuitBreaker(threshold=3, cooldown=10, on_state_change=states.append, clock=clock)
    for _ in range(3):
        with pytest.raises(UpstreamTimeout):
            breaker.call(fail(UpstreamTimeout()))
    assert breaker.state == OPEN

    calls = []
    with pytest.raises(CircuitOpen) as caught:
        breaker.call(lambda: calls.append(1))
    assert calls == [] and caught.value.retry_after == 10 and caught.value.status == 503

    clock.now += 10
    assert breaker.call(lambda: "probe ok") == "probe ok"
    assert breaker.state == CLOSED
    assert states == [OPEN, HALF_OPEN, CLOSED]


def test_a_failed_probe_reopens_for_a_full_cooldown():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    with pytest.raises(UpstreamUnavailable):
        breaker.call(fail(UpstreamUnavailable()))
    clock.now += 5
    with pytest.raises(UpstreamUnavailable):
        breaker.call(fail(UpstreamUnavailable()))
    assert breaker.state == OPEN
    clock.now += 4
    with pytest.raises(CircuitOpen):
        breaker.call(lambda: None)


def test_successes_reset_the_count_and_configuration_refusals_do_not_count():
    breaker = CircuitBreaker(threshold=2, clock=Clock())
    with pytest.raises(UpstreamTimeout):
        breaker.call(fail(UpstreamTimeout()))
    breaker.call(lambda: None)
    with pytest.raises(UpstreamTimeout):
        breaker.call(fail(UpstreamTimeout()))
    for _ in range(5):
        with pytest.raises(UpstreamRefused):
            breaker.call(fail(UpstreamRefused(code="bad_api_key")))
    assert breaker.state == CLOSED


def test_open_circuit_spares_ayrshare_and_answers_503_with_retry_after(settings_env, emulator):
    emulator.set_knobs(fault="500", fault_count=-1)
    client = create_app(
        {**settings_env, "CIRCUIT_FAILURE_THRESHOLD": "2", "CIRCUIT_COOLDOWN_SECONDS": "30"}
    ).test_client()
    users = ["user1", "user2", "user3", "user4", "user5"]
    statuses = [client.get(signed_path(u, SIGNING_SECRET), headers={"Accept": "application/json"}) for u in users]

    assert [r.status_code for r in statuses] == [503] * 5
    assert [r.json["error"]["code"] for r in statuses[2:]] == ["upstream_circuit_open"] * 3
    assert 25 <= int(statuses[-1].headers["Retry-After"]) <= 30
    assert emulator.calls() == 2 * 2  # two requests, each with its one retry; then nothing while open


def test_a_call_from_before_the_outage_cannot_steal_or_settle_the_probe():
    clock = Clock()
    breaker = CircuitBreaker(threshold=1, cooldown=5, clock=clock)
    straggler_started = breaker._enter()  # began while closed; finishes later
    with pytest.raises(UpstreamTimeout):
        breaker.call(fail(UpstreamTimeout()))
    clock.now += 5
    probe = breaker._enter()
    assert probe is True and straggler_started is False
    breaker._record(failed=False, is_probe=straggler_started)  # the straggler succeeds: evidence, closes
    assert breaker.state == CLOSED
    breaker._record(failed=True, is_probe=probe)  # the probe's failure reopens at once
    assert breaker.state == OPEN
