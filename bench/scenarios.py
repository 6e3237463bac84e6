"""Scenarios 1 and 2 (targets of issue 17): the cache-hit path against a bare endpoint, and a cold burst for one user.

Each function runs against a fresh stack (bench/stack.py), returns a JSON-able dict with a `checks` section (the
issue's targets, each with the measured value and whether it was met), and leaves a table, a JSON file and a chart.
`quick=True` is the smoke version used by the tests: same code paths, seconds instead of minutes.

The service runs in the default link flow (Link Sessions, no private key); the cold burst runs in both flows, session
and jwt, and checks its targets in each.
"""

from __future__ import annotations

import itertools
import statistics

from . import report
from .instructions import count_instructions
from .loadgen import latency_summary, run_client, run_wrk
from .stack import (
    BARE_APP,
    DEFAULT_FLOW,
    FLOWS,
    SERVICE_APP,
    Stack,
    counter_by,
    cpu_seconds,
    link_token,
    load_average,
    user_name,
)

CONNECTIONS = 32  # the concurrency of the cache-hit comparison
HIT_RATIO_TARGET = 0.6  # service req/s >= 0.6 x bare, the median of the interleaved rounds
HIT_P99_RATIO_TARGET = 2.0  # service p99 <= 2 x bare, likewise
BARE_GET = "bare + one Redis GET"
# The service with its two largest optional steps on a hit switched off: how far the rest (Flask, the signature
# check, the Redis read, decryption, headers, metrics) already is from the floor.
SERVICE_LEAN = "service, request log and rate limits off"
LEAN_ENV = {"RATE_LIMIT_ENABLED": "0", "LOG_LEVEL": "WARNING"}
BURST_P99_ALLOWANCE_MS = 300  # a cold burst's p99 may exceed the upstream's latency by this much (800 ms at 500 ms)
OTHER_MODELS = [("gevent w2", {"GUNICORN_WORKER_CLASS": "gevent"})]
DIAGNOSTIC_VARIANTS = [
    ("rate limiting off", {"RATE_LIMIT_ENABLED": "0"}),
    ("request log off", {"LOG_LEVEL": "WARNING"}),
]


def check(name: str, value: object, target: str, ok: bool) -> dict:
    return {"check": name, "value": value, "target": target, "met": bool(ok)}


# -- 1. cache-hit path vs bare endpoint --------------------------------------------------------------------------
def cache_hit(quick: bool = False) -> dict:
    user_count = 5 if quick else 40
    levels = [CONNECTIONS] if quick else [1, 8, CONNECTIONS, 64]
    # The headline level runs several rounds, each a bare run followed by a service run, so a burst of load from
    # elsewhere on this shared machine lands on one round's pair rather than on one side; the median round decides.
    rounds_at_headline, headline_seconds = (3, 1) if quick else (5, 8)
    instruction_hits = 10 if quick else 1000  # a count per hit that repeats within 1-2 %: no need for more
    users = [user_name(i) for i in range(user_count)]
    load_before = load_average()
    with Stack(users=user_count) as stack:
        service = stack.start_service()
        calls_before = stack.upstream_calls()
        urls = stack.warm(service, users)
        bare = stack.start_service(app=BARE_APP, BARE_REDIRECT_URL=urls[users[0]])
        # Context in the headline rounds: the bare endpoint plus the one Redis read a hit costs when links live only
        # in Redis, the least such a design can do.
        bare_get = stack.start_service(app=BARE_APP, BARE_REDIRECT_URL=urls[users[0]], BARE_REDIS_GET="1")
        lean = stack.start_service(**LEAN_ENV)
        paths = [stack.signed_path(user) for user in users]
        runs: dict[str, list] = {"bare": [], BARE_GET: [], "service": [], SERVICE_LEAN: []}
        cpu_us: dict[str, list[float]] = {label: [] for label in runs}  # the workers' CPU per request at the headline
        for level in levels:
            rounds = rounds_at_headline if level == CONNECTIONS else 1
            seconds = headline_seconds if level == CONNECTIONS else 5
            targets = [("bare", bare), ("service", service)]
            if level == CONNECTIONS:
                targets.insert(1, (BARE_GET, bare_get))
                targets.append((SERVICE_LEAN, lean))
            for _ in range(rounds):
                for label, target in targets:
                    pids = target.worker_pids()
                    cpu_before = cpu_seconds(pids)
                    result = run_wrk(target.url, paths, level, seconds)
                    if level == CONNECTIONS:
                        cpu_us[label].append((cpu_seconds(pids) - cpu_before) / max(1, result.requests) * 1e6)
                    runs[label].append(result)
        # Diagnostics, not the headline: the same service with one feature off, to attribute the cost on the path.
        diagnostics = {}
        for label, env in [] if quick else DIAGNOSTIC_VARIANTS:
            variant = stack.start_service(**env)
            diagnostics[label] = run_wrk(variant.url, paths, CONNECTIONS, 8)
            stack.stop_service(variant)
        # The other worker model on the hit path: bare and service alike.
        for model, env in [] if quick else OTHER_MODELS:
            for label, app in (("bare", BARE_APP), ("service", SERVICE_APP)):
                variant = stack.start_service(app=app, BARE_REDIRECT_URL=urls[users[0]], **env)
                diagnostics[f"{model}: {label}"] = run_wrk(variant.url, paths, CONNECTIONS, 8)
                stack.stop_service(variant)
        upstream_calls = stack.upstream_calls() - calls_before
        service_log_lines = service.log().count('"msg":"request"')
        gunicorn = service.gunicorn
    # Beside the timings, the count that repeats from run to run: instructions per hit, each app under callgrind in
    # its own process (bench/instructions.py), once the timed runs are over so it does not load the machine.
    instructions = {app: count_instructions(app, instruction_hits) / instruction_hits for app in ("service", "bare")}

    at = {label: [r for r in results if r.connections == CONNECTIONS] for label, results in runs.items()}
    pairs = list(zip(at["bare"], at["service"], strict=True))
    round_ratios = [s.rps / b.rps for b, s in pairs]
    bare_get_ratios = [g.rps / b.rps for b, g in zip(at["bare"], at[BARE_GET], strict=True)]
    lean_ratios = [s.rps / b.rps for b, s in zip(at["bare"], at[SERVICE_LEAN], strict=True)]
    round_p99_ratios = [s.percentile_ms(99) / b.percentile_ms(99) for b, s in pairs]
    ratio, p99_ratio = statistics.median(round_ratios), statistics.median(round_p99_ratios)
    rps = {label: statistics.median(r.rps for r in rs) for label, rs in at.items()}
    p99 = {label: statistics.median(r.percentile_ms(99) for r in rs) for label, rs in at.items()}
    served = sum(r.requests for r in runs["service"])
    errors = sum(r.error_count for rs in runs.values() for r in rs)
    # Context, not a target: what each request cost the gunicorn workers in CPU. Less sensitive than req/s to how
    # much of the two cores the load generator and the rest of the machine took during each run.
    cpu_per_request = {label: round(statistics.median(values)) for label, values in cpu_us.items()}
    instruction_ratio = instructions["service"] / instructions["bare"]
    checks = [
        check(
            f"throughput service/bare @{CONNECTIONS}, median of {len(pairs)} interleaved rounds",
            round(ratio, 3),
            f">= {HIT_RATIO_TARGET}",
            ratio >= HIT_RATIO_TARGET,
        ),
        check(
            f"p99 service/bare @{CONNECTIONS}, median of {len(pairs)} interleaved rounds",
            round(p99_ratio, 2),
            f"<= {HIT_P99_RATIO_TARGET:g}",
            p99_ratio <= HIT_P99_RATIO_TARGET,
        ),
        check(
            f"throughput ({BARE_GET})/bare @{CONNECTIONS}, median of {len(bare_get_ratios)} rounds",
            round(statistics.median(bare_get_ratios), 3),
            "context: a hit that reads Redis",
            True,
        ),
        check(
            f"throughput ({SERVICE_LEAN})/bare @{CONNECTIONS}, median of {len(lean_ratios)} rounds",
            round(statistics.median(lean_ratios), 3),
            "context: the floor without those two steps",
            True,
        ),
        check("errors (non-3xx, socket)", errors, "0", errors == 0),
        check("upstream calls", upstream_calls, f"== {user_count} (warm-up only)", upstream_calls == user_count),
        check(
            f"worker CPU per request @{CONNECTIONS}, us (bare, bare + GET, service, service lean; median)",
            [cpu_per_request[label] for label in ("bare", BARE_GET, "service", SERVICE_LEAN)],
            "context: the service's own work",
            True,
        ),
        check(
            "instructions per hit (bare, service; callgrind)",
            [round(instructions["bare"]), round(instructions["service"])],
            f"context: service/bare {instruction_ratio:.2f}",
            True,
        ),
    ]
    rows = []
    for label, results in runs.items():
        for r in results:
            rows.append([label, r.connections, round(r.rps), r.percentile_ms(50), r.percentile_ms(99), r.error_count])
    for label, r in diagnostics.items():
        row = [r.connections, round(r.rps), r.percentile_ms(50), r.percentile_ms(99), r.error_count]
        rows.append([f"diagnostic: {label}", *row])
    report.table(
        "1. cache-hit path vs bare endpoint (wrk, signed links)",
        ["endpoint", "conns", "req/s", "p50 ms", "p99 ms", "errors"],
        rows,
    )
    print(
        f"  rounds @{CONNECTIONS}, service/bare req/s: {', '.join(f'{v:.2f}' for v in round_ratios)};"
        f" p99: {', '.join(f'{v:.2f}' for v in round_p99_ratios)};"
        f" ({BARE_GET})/bare req/s: {', '.join(f'{v:.2f}' for v in bare_get_ratios)};"
        f" ({SERVICE_LEAN})/bare req/s: {', '.join(f'{v:.2f}' for v in lean_ratios)}",
        flush=True,
    )
    _print_checks(checks)
    data = {
        "gunicorn": gunicorn,
        "users": user_count,
        "load_average_at_start": load_before,
        "runs": {label: [r.as_dict() for r in results] for label, results in runs.items()},
        "diagnostics": {label: r.as_dict() for label, r in diagnostics.items()},
        "rps_at_32": {label: round(value, 1) for label, value in rps.items()},
        "p99_ms_at_32": {label: round(value, 2) for label, value in p99.items()},
        "round_ratios_rps": [round(value, 3) for value in round_ratios],
        "round_ratios_rps_bare_redis_get": [round(value, 3) for value in bare_get_ratios],
        "round_ratios_rps_service_lean": [round(value, 3) for value in lean_ratios],
        "round_ratios_p99": [round(value, 3) for value in round_p99_ratios],
        "ratio_rps": round(ratio, 3),
        "ratio_p99": round(p99_ratio, 3),
        "worker_cpu_us_per_request_at_32": {label: [round(v) for v in values] for label, values in cpu_us.items()},
        "instructions_per_hit": {app: round(value) for app, value in instructions.items()},
        "instruction_hits_counted": instruction_hits,
        "upstream_calls": upstream_calls,
        "requests_served_by_service": served,
        "service_request_log_lines": service_log_lines,
        "checks": checks,
    }
    report.write_json("cache_hit", data, quick)
    report.chart(
        "cache_hit",
        quick,
        f"cache-hit path vs bare 302 (service/bare @32, median round: {ratio:.2f}x req/s, {p99_ratio:.2f}x p99)",
        latency={
            f"{label} @{CONNECTIONS}": [(p, v / 1000) for p, v in at[label][0].latency_us["percentiles"] if p <= 99.9]
            for label in at
        },
        throughput={label: _mean_by_level(results) for label, results in runs.items()},
    )
    return data


def _mean_by_level(results: list) -> list[tuple[int, float]]:
    levels = sorted({r.connections for r in results})
    return [
        (lv, sum(r.rps for r in results if r.connections == lv) / sum(r.connections == lv for r in results))
        for lv in levels
    ]


# -- 2. cold burst -------------------------------------------------------------------------------------------------
def cold_burst(quick: bool = False) -> dict:
    """The bursts run in each link flow (FLOWS: the default, session, then jwt), each against its own service and
    with users nobody asked for before; every target is checked per flow."""
    latency_ms = 200 if quick else 500
    sizes = [50] if quick else [25, 50, 100, 200]
    rounds_at_max = 1 if quick else 3
    plan = [(size, 1) for size in sizes[:-1]] + [(sizes[-1], r + 1) for r in range(rounds_at_max)]
    load_before = load_average()
    bursts = []
    per_flow: dict[str, dict] = {}
    alone: dict[str, dict] = {}
    users = (user_name(i) for i in itertools.count())
    with Stack(users=len(plan) * len(FLOWS) + 1) as stack:
        stack.emulator.set_knobs(latency_ms=latency_ms)
        for flow in FLOWS:
            service = stack.start_service(flow=flow)
            gunicorn = service.gunicorn
            stats_before = stack.emulator.stats()
            for size, round_no in plan:
                path = stack.signed_path(next(users))
                calls_before = stack.upstream_calls()
                answer = run_client(
                    {"base_url": service.url, "mode": "burst", "requests": [{"path": path}] * size, "timeout": 30},
                    timeout=120,
                )
                burst = _burst(size, round_no, answer["results"], stack.upstream_calls() - calls_before, 302, flow)
                burst["upstream_call_at_ms"] = _upstream_call_at_ms(stack, answer["results"], burst["upstream_calls"])
                bursts.append(burst)
            stats_after = stack.emulator.stats()
            per_flow[flow] = {
                "private_key_passed": "AYRSHARE_PRIVATE_KEY" in service.env,  # jwt only: session needs none
                # Which endpoint the flow's calls went to, as the emulator counted them, and the service's own count
                # of its calls and lookups from /metrics (both counters carry a `flow` label).
                "emulator_calls": {
                    name: stats_after[name] - stats_before[name] for name in ("link_session_calls", "generate_calls")
                },
                "metrics_upstream_calls": counter_by(service, "ayrshare_connect_upstream_calls", "flow"),
                "metrics_cache_lookups": counter_by(service, "ayrshare_connect_cache_lookups", "flow"),
            }
            stack.stop_service(service)
        # Diagnostic, not the headline: the same burst against the service (default flow) with rate limiting off.
        diagnostic = None
        if not quick:
            variant = stack.start_service(RATE_LIMIT_ENABLED="0")
            requests = [{"path": stack.signed_path(next(users))}] * sizes[-1]
            calls_before = stack.upstream_calls()
            answer = run_client({"base_url": variant.url, "mode": "burst", "requests": requests}, timeout=120)
            diagnostic = _burst(
                sizes[-1],
                "rate limiting off",
                answer["results"],
                stack.upstream_calls() - calls_before,
                302,
                DEFAULT_FLOW,
            )
            stack.stop_service(variant)
        # The floor of this stack: the bare endpoint under the same gunicorn, every request sleeping the upstream's
        # latency and then answering the 302 (no single-flight, no Redis). What the service adds is measured above it.
        floor = None
        if not quick:
            bare = stack.start_service(app=BARE_APP, BARE_DELAY_MS=str(latency_ms))
            answer = run_client(
                {"base_url": bare.url, "mode": "burst", "requests": [{"path": "/connect/floor"}] * sizes[-1]},
                timeout=120,
            )
            floor = _burst(sizes[-1], f"bare endpoint, sleeps {latency_ms} ms", answer["results"], 0, 302, None)
            stack.stop_service(bare)
        # What the client, the emulator and this machine add on their own: the same burst straight to the emulator,
        # at the endpoint each flow calls.
        for flow in FLOWS:
            direct = [stack.direct_mint_request(flow, f"PK-DIRECT-{flow.upper()}-{i}") for i in range(sizes[-1])]
            calls_before = stack.upstream_calls()
            answer = run_client({"base_url": stack.emulator.origin, "mode": "burst", "requests": direct}, timeout=120)
            alone[flow] = _burst(
                sizes[-1], "upstream alone", answer["results"], stack.upstream_calls() - calls_before, 200, flow
            )
    limit = latency_ms + BURST_P99_ALLOWANCE_MS
    checks = []
    for flow in FLOWS:
        top = [b for b in bursts if b["flow"] == flow and b["concurrency"] == sizes[-1]]
        mine = [b for b in bursts if b["flow"] == flow]
        counts = per_flow[flow]
        own, other = (
            ("link_session_calls", "generate_calls") if flow == "session" else ("generate_calls", "link_session_calls")
        )
        calls = sum(b["upstream_calls"] for b in mine)
        answered = sum(b["answered_302"] for b in mine)
        flow_checks = [
            check(
                f"[{flow}] upstream calls per burst of {sizes[-1]}",
                [b["upstream_calls"] for b in top],
                "1 each",
                all(b["upstream_calls"] == 1 for b in top),
            ),
            check(
                f"[{flow}] same URL for every request",
                [b["distinct_urls"] for b in top],
                f"1 distinct, a {flow} link",
                all(b["distinct_urls"] == 1 and b["answered_302"] == b["flow_links"] == sizes[-1] for b in top),
            ),
            check(
                f"[{flow}] p99 ms", [b["p99_ms"] for b in top], f"<= {limit}", all(b["p99_ms"] <= limit for b in top)
            ),
            check(
                f"[{flow}] calls at the flow's endpoint; service metrics (flow label) agree",
                f"emulator {own} {counts['emulator_calls'][own]}, {other} {counts['emulator_calls'][other]};"
                f" metrics upstream {_counts_text(counts['metrics_upstream_calls'])},"
                f" lookups {_counts_text(counts['metrics_cache_lookups'])}",
                f"{calls} calls, {answered} lookups, all flow={flow}",
                counts["emulator_calls"] == {own: calls, other: 0}
                and counts["metrics_upstream_calls"] == {flow: calls}
                and counts["metrics_cache_lookups"] == {flow: answered},
            ),
            check(
                f"[{flow}] upstream alone: p99 of {sizes[-1]} direct calls",
                alone[flow]["p99_ms"],
                "context: client+emulator cost",
                True,
            ),
        ]
        counts["met"] = all(item["met"] for item in flow_checks)
        counts["upstream_calls_per_top_burst"] = [b["upstream_calls"] for b in top]
        counts["distinct_urls_per_top_burst"] = [b["distinct_urls"] for b in top]
        counts["p99_ms_per_top_burst"] = [b["p99_ms"] for b in top]
        checks += flow_checks
    if floor:
        checks.append(
            check(f"bare endpoint floor: p99 of {sizes[-1]}", floor["p99_ms"], "context: gunicorn+client cost", True)
        )
    report.table(
        f"2. cold burst (one uncached user, emulator {latency_ms} ms), per link flow",
        [
            "flow",
            "concurrency",
            "round",
            "302s",
            "errors",
            "URLs",
            "upstream calls",
            "call at ms",
            "p50 ms",
            "p99 ms",
            "max ms",
        ],
        [
            [
                b["flow"],
                b["concurrency"],
                b["round"],
                b["answered_302"],
                b["errors"],
                b["distinct_urls"],
                b["upstream_calls"],
                b.get("upstream_call_at_ms", "-"),
                b["p50_ms"],
                b["p99_ms"],
                b["max_ms"],
            ]
            for b in [*bursts, *([diagnostic] if diagnostic else []), *([floor] if floor else []), *alone.values()]
        ],
    )
    _print_checks(checks)
    data = {
        "gunicorn": gunicorn,
        "emulator_latency_ms": latency_ms,
        "load_average_at_start": load_before,
        "flows": list(FLOWS),
        "bursts": bursts,
        "by_flow": per_flow,
        "upstream_alone": alone,
        "bare_endpoint_floor": floor,
        "diagnostic_rate_limiting_off": diagnostic,
        "checks": checks,
    }
    report.write_json("cold_burst", data, quick)
    report.chart(
        "cold_burst",
        quick,
        f"cold burst, upstream {latency_ms} ms: one upstream call per burst, in each link flow",
        latency={
            f"{b['flow']}: burst of {b['concurrency']} (round {b['round']})": report.cdf_points(b["latencies_ms"])
            for b in bursts
            if b["concurrency"] == sizes[-1] or quick
        }
        | {
            f"{flow}: upstream alone, {sizes[-1]} at once": report.cdf_points(result["latencies_ms"])
            for flow, result in alone.items()
        },
        throughput={
            f"{flow}: answers/s over the burst": [
                (b["concurrency"], b["throughput_rps"]) for b in bursts if b["round"] == 1 and b["flow"] == flow
            ]
            for flow in FLOWS
        },
    )
    return data


def _counts_text(counts: dict[str, float]) -> str:
    return ", ".join(f"{label}={value:g}" for label, value in sorted(counts.items())) or "none"


def _burst(
    size: int, round_no: object, results: list[dict], upstream_calls: int, ok_status: int, flow: str | None
) -> dict:
    """One burst's answers summed up; `flow` is the link flow that served it (None: the bare endpoint)."""
    ok = [r for r in results if r.get("status") == ok_status]
    first_start = min(r["start"] for r in results)
    last_end = max(r["start"] + r["latency_ms"] / 1000 for r in results)
    redirects = ok_status == 302 and flow is not None
    return {
        "flow": flow,
        "concurrency": size,
        "round": round_no,
        "answered_302": len(ok),
        "errors": len(results) - len(ok),
        "distinct_urls": len({r.get("location") for r in ok}) if ok_status == 302 else None,
        # Answers whose Location is a linking URL of the flow (`?session=ayr_ls_...` or `?jwt=...`, this domain).
        "flow_links": sum(1 for r in ok if link_token(r.get("location"), flow)) if redirects else None,
        "upstream_calls": upstream_calls,
        "burst_seconds": round(last_end - first_start, 3),
        "throughput_rps": round(len(ok) / (last_end - first_start), 1),
        **latency_summary(results),
        "latencies_ms": sorted(round(r["latency_ms"], 2) for r in results),
    }


def _upstream_call_at_ms(stack: Stack, results: list[dict], upstream_calls: int) -> float | None:
    """When the emulator logged the burst's one upstream call, in ms after the burst's first request was sent (the
    emulator logs a call once it has read it, and for generateJWT checked its private key: a few ms after the
    service sent it).

    A burst's p99 follows this closely (p99 ~ this + upstream latency + the time 200 answers take to go out), so it
    tells the time spent before the call from the time spent after it."""
    if upstream_calls != 1:
        return None
    logged_at = stack.emulator.stats()["requests"][-1]["at"]
    return round((logged_at - min(r["start"] for r in results)) * 1000, 1)


def _print_checks(checks: list[dict]) -> None:
    for item in checks:
        mark = "ok  " if item["met"] else "MISS"
        print(f"  [{mark}] {item['check']}: {item['value']} (target {item['target']})", flush=True)
