"""The benchmark harness in miniature (`python -m bench --quick` sizes): every scenario runs end to end against the
real stack and counts upstream calls correctly. Nothing here looks at a speed: that is what `make bench` is for."""

from __future__ import annotations

import json
import shutil

import pytest

from bench import report
from bench.economy import footprint, minimum_calls, upstream_economy
from bench.scenarios import BARE_GET, SERVICE_LEAN, cache_hit, cold_burst
from bench.slow_upstream import UPSTREAM_ALONE, WORKER_MODELS, slow_upstream
from bench.stack import DEFAULT_FLOW, FLOWS


@pytest.fixture(autouse=True)
def results_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(report, "RESULTS_DIR", tmp_path)
    return tmp_path


def _written(results_dir, name: str) -> dict:
    assert (results_dir / f"{name}-quick.png").stat().st_size > 1000
    return json.loads((results_dir / f"{name}-quick.json").read_text())


def test_wrk_is_installed():
    assert shutil.which("wrk"), "the benchmark's load generator: apt-get install -y wrk"


def test_cache_hit_serves_only_from_cache_after_warm_up(results_dir):
    data = cache_hit(quick=True)
    assert data["upstream_calls"] == data["users"]  # the warm-up, and not one call during the wrk runs
    assert data["requests_served_by_service"] > 0
    for runs in data["runs"].values():
        assert all(sum(run["errors"].values()) == 0 for run in runs)
    assert _written(results_dir, "cache_hit")["ratio_rps"] > 0
    # The workers' CPU per request was read from /proc for both sides: a positive number each, for every run.
    assert all(cost > 0 for costs in data["worker_cpu_us_per_request_at_32"].values() for cost in costs)
    # The ratios are the median of interleaved rounds, one bare run and one service run each.
    assert len(data["round_ratios_rps"]) == len(data["runs"]["bare"]) == len(data["runs"]["service"]) >= 3
    assert min(data["round_ratios_rps"]) <= data["ratio_rps"] <= max(data["round_ratios_rps"])
    # Each round also ran the bare endpoint with its one Redis GET, between the two.
    assert len(data["round_ratios_rps_bare_redis_get"]) == len(data["runs"][BARE_GET]) >= 3
    # ...and, after the service, the service with its request log and rate limits off, on the same cached links.
    assert len(data["round_ratios_rps_service_lean"]) == len(data["runs"][SERVICE_LEAN]) >= 3
    # Instructions per hit were counted under callgrind for both apps; the service does more than the bare 302.
    assert data["instructions_per_hit"]["service"] > data["instructions_per_hit"]["bare"] > 10_000


def test_cold_burst_costs_one_upstream_call_and_one_url_in_each_flow(results_dir):
    data = cold_burst(quick=True)
    assert data["flows"] == list(FLOWS) and FLOWS[0] == DEFAULT_FLOW == "session"
    assert {burst["flow"] for burst in data["bursts"]} == set(FLOWS)
    for burst in data["bursts"]:
        assert burst["upstream_calls"] == 1
        assert burst["answered_302"] == burst["concurrency"] == burst["flow_links"]  # every Location a link of the flow
        assert burst["distinct_urls"] == 1
        # The one call was logged by the emulator after the burst started and before its last answer.
        assert 0 <= burst["upstream_call_at_ms"] <= burst["max_ms"]
    for flow, counts in data["by_flow"].items():
        bursts = [burst for burst in data["bursts"] if burst["flow"] == flow]
        calls, answered = len(bursts), sum(burst["answered_302"] for burst in bursts)
        # The flow's calls reached its own endpoint only, and the service counted them under its flow label.
        own, other = (
            ("link_session_calls", "generate_calls") if flow == "session" else ("generate_calls", "link_session_calls")
        )
        assert counts["emulator_calls"] == {own: calls, other: 0}
        assert counts["metrics_upstream_calls"] == {flow: calls}
        assert counts["metrics_cache_lookups"] == {flow: answered}
        assert counts["upstream_calls_per_top_burst"] == [1] and counts["distinct_urls_per_top_burst"] == [1]
        # The session service ran without a private key (it needs none); only jwt was given one.
        assert counts["private_key_passed"] is (flow == "jwt")
        assert data["upstream_alone"][flow]["upstream_calls"] == data["upstream_alone"][flow]["answered_302"] > 0
    assert {item["check"].split("]")[0] + "]" for item in data["checks"]} == {f"[{flow}]" for flow in FLOWS}
    _written(results_dir, "cold_burst")


def test_slow_upstream_makes_one_call_per_distinct_user_in_every_worker_model(results_dir):
    data = slow_upstream(quick=True)
    assert {run["model"] for run in data["runs"]} == {UPSTREAM_ALONE} | {model["label"] for model in WORKER_MODELS}
    for run in data["runs"]:
        if run["errors"] == 0:
            assert run["upstream_calls"] == run["answered_302"] == run["requests"]
    assert any(run["errors"] == 0 for run in data["runs"])
    assert data["shipped_model"] in {model["label"] for model in WORKER_MODELS}  # the one the target is checked on
    _written(results_dir, "slow_upstream")


def test_upstream_economy_counts_calls_against_the_minimum_in_each_flow(results_dir):
    data = upstream_economy(quick=True)
    assert data["flows"] == list(FLOWS) and set(data["by_flow"]) == set(FLOWS)
    for flow, day in data["by_flow"].items():
        assert day["flow"] == flow
        assert day["theoretical_minimum"] > 0 and day["idealised_minimum"] > 0
        assert len(day["per_user"]) == data["users"]
        assert all(user["user"].startswith(flow) for user in day["per_user"])  # each flow's own users
        assert day["answered"] == day["clicks"] > 0
        assert day["upstream_calls"] == sum(user["upstream_calls"] for user in day["per_user"]) == day["endpoint_calls"]
        assert day["service_metrics"]["upstream_calls"] == {flow: day["upstream_calls"]}
        assert day["service_metrics"]["cache_lookups"] == {flow: day["answered"]}
        assert day["wasted_calls"] == 0 and day["stale_answers"] == 0
        # A generateJWT link's expiry is a whole second; a Link Session's is known to within its create call.
        assert day["expiry_uncertainty_ms_max"] == 0 if flow == "jwt" else day["expiry_uncertainty_ms_max"] < 1000
    prefixes = ("answered", "upstream calls (", "calls at the flow")
    assert all(item["met"] for item in data["checks"] if item["check"].split("] ", 1)[1].startswith(prefixes))
    assert {item["check"].split("]")[0] + "]" for item in data["checks"]} == {f"[{flow}]" for flow in FLOWS}
    _written(results_dir, "upstream_economy")


def test_minimum_calls_is_one_per_window_of_clicks():
    assert minimum_calls([], 30, 5) == 0
    assert minimum_calls([0, 1, 24.9], 30, 5) == 1
    assert minimum_calls([0, 25, 26, 49.9, 50], 30, 5) == 3


def test_minimum_calls_with_whole_second_exp_counts_tokens_as_minted():
    # A token asked for at 12.7 s and minted 0.1 s later has exp = 12 + 30: good for clicks before 37 s, not 37.7 s.
    clicks = [12.7, 37.2]
    assert minimum_calls(clicks, 30, 5) == 1
    assert minimum_calls(clicks, 30, 5, mint_delay=0.1, whole_second_exp=True) == 2
    # Minted just after a whole second, the token gains that second.
    assert minimum_calls([12.95, 37.9], 30, 5, mint_delay=0.1, whole_second_exp=True) == 1


def test_footprint_reads_worker_rss_and_redis_bytes_per_link(results_dir):
    data = footprint(quick=True)
    assert data["upstream_calls"] == data["users"]
    assert all(kib > 10_000 for kib in data["worker_rss_loaded_kib"])
    assert len(data["worker_rss_loaded_kib"]) == data["gunicorn"]["workers"]
    assert len(data["worker_pss_loaded_kib"]) == len(data["worker_rss_loaded_kib"])
    assert all(kib > 1_000 for kib in data["worker_pss_loaded_kib"])
    assert data["redis_memory_usage_per_link_bytes"] > data["stored_value_bytes_mean"] > 100
    assert data["user_indexes"] == data["users"] and data["redis_memory_usage_per_user_index_bytes"] > 100
    _written(results_dir, "footprint")


def test_instruction_count_switches_callgrind_on_only_around_the_hits():
    """`python -m bench.instructions`: the service's cache hits counted under callgrind, start-up left out."""
    from bench.instructions import count_instructions

    few, more = count_instructions("service", hits=5), count_instructions("service", hits=25)
    # Start-up alone (imports, key generation, the stack) is billions of instructions; the hits are counted alone.
    assert 5 * 100_000 < few < 5 * 5_000_000
    assert 20 * 100_000 < more - few < 20 * 5_000_000
