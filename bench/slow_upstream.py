"""Scenario 3 (target of issue 17): a slow upstream and many distinct users, for each gunicorn worker model.

Every request is for a user nobody asked for before, so each one waits the emulator's full latency: the service can
only keep up if it holds `concurrency` requests in flight at once. At the top level, 200 concurrent, that is 1,000
users. The target is for the worker model config/gunicorn.conf.py ships with (gthread, 2 workers x 128 threads); the
others are measured beside it. The same calls sent straight to the emulator by the same client give the stack's own
ceiling ("upstream alone"), so the comparison says how much the service loses.
"""

from __future__ import annotations

from . import report
from .loadgen import latency_summary, run_client
from .scenarios import _print_checks, check
from .stack import DEFAULT_FLOW, Stack, load_average, rss_kib, user_name

THROUGHPUT_TARGET = 0.8  # of `concurrency` / upstream latency: 160 req/s at 200 concurrent and a 1 s upstream

# -- 3. slow upstream, many users, worker models -------------------------------------------------------------------
UPSTREAM_ALONE = "upstream alone (no service)"
WORKER_MODELS = [
    # sync serves one request per worker: two answers per upstream second whatever the concurrency, so it is measured
    # at two levels only (the rest would only add minutes of timeouts).
    # (threads=1: gunicorn silently runs gthread when "sync" is asked for with more than one thread.)
    {"label": "sync w2", "worker_class": "sync", "workers": 2, "threads": 1, "levels": [25, 200]},
    {"label": "gthread w2 t32", "worker_class": "gthread", "workers": 2, "threads": 32},
    {"label": "gthread w2 t128", "worker_class": "gthread", "workers": 2, "threads": 128},
    {"label": "gevent w2", "worker_class": "gevent", "workers": 2},
]


def slow_upstream(quick: bool = False, models: list[dict] | None = None) -> dict:
    latency_ms = 200 if quick else 1000
    levels = [20] if quick else [25, 50, 100, 200]
    per_level = 2 if quick else 5  # each level sends per_level x concurrency requests, each for a distinct user
    models = models or WORKER_MODELS
    top = levels[-1]
    load_before = load_average()
    runs = []
    with Stack(users=per_level * sum(levels)) as stack:
        shipped = stack.default_gunicorn()
        stack.emulator.set_knobs(latency_ms=latency_ms)
        # The ceiling of the stack: the same calls the service makes (its default flow's: Link Session creates), sent
        # straight to the emulator by the same client.
        for level in levels:
            count = per_level * level
            direct = [stack.direct_mint_request(DEFAULT_FLOW, f"PK-DIRECT-{level}-{i}") for i in range(count)]
            calls_before = stack.upstream_calls()
            answer = run_client(
                {
                    "base_url": stack.emulator.origin,
                    "mode": "pool",
                    "concurrency": level,
                    "requests": direct,
                    "timeout": 10,
                },
                timeout=300,
            )
            runs.append(
                _pool_run(
                    UPSTREAM_ALONE,
                    level,
                    count,
                    answer,
                    stack.upstream_calls() - calls_before,
                    ok_status=200,
                    keep_latencies=level == top,
                )
            )
        for model in models:
            service = stack.start_service(
                worker_class=model["worker_class"], workers=model["workers"], threads=model.get("threads")
            )
            first_user = 0
            for level in [lv for lv in levels if lv in model.get("levels", levels)] or levels:
                count = per_level * level
                paths = [{"path": stack.signed_path(user_name(first_user + i))} for i in range(count)]
                first_user += count
                calls_before = stack.upstream_calls()
                answer = run_client(
                    {
                        "base_url": service.url,
                        "mode": "pool",
                        "concurrency": level,
                        "requests": paths,
                        "timeout": 10,
                        "max_seconds": 4 * count / level * latency_ms / 1000 + 5,
                    },
                    timeout=300,
                )
                runs.append(
                    _pool_run(
                        model["label"],
                        level,
                        count,
                        answer,
                        stack.upstream_calls() - calls_before,
                        ok_status=302,
                        keep_latencies=level == top,
                    )
                )
            runs[-1]["worker_rss_mib"] = [round(rss_kib(pid) / 1024, 1) for pid in service.worker_pids()]
            stack.stop_service(service)
            stack.redis.client().flushall()
    target = THROUGHPUT_TARGET * top / (latency_ms / 1000)
    at_top = [r for r in runs if r["concurrency"] == top and r["model"] != UPSTREAM_ALONE]
    best = max(at_top, key=lambda r: (r["errors"] == 0, r["throughput_rps"]))
    ceiling = next(r for r in runs if r["concurrency"] == top and r["model"] == UPSTREAM_ALONE)
    default = next((r for r in at_top if r["model"] == _label_of(shipped, models)), None)
    default_rps = default["throughput_rps"] if default else None
    checks = [
        check(
            f"shipped model ({_describe(shipped)}): errors @{top}",
            default["errors"] if default else "not measured",
            "0",
            default is not None and default["errors"] == 0,
        ),
        check(
            f"shipped model: throughput @{top}, req/s",
            default_rps,
            f">= {target:.0f}",
            default_rps is not None and default_rps >= target,
        ),
        check(f"context: best model @{top}", f"{best['model']}, {best['throughput_rps']} req/s", "-", True),
        check(
            "upstream calls == answered (one per distinct user)",
            [(r["model"], r["concurrency"], r["upstream_calls"], r["answered_302"]) for r in runs],
            "equal where no errors",
            all(r["upstream_calls"] == r["answered_302"] for r in runs if r["errors"] == 0),
        ),
        check(
            f"context: shipped model / upstream alone @{top}",
            round(default_rps / ceiling["throughput_rps"], 2) if default_rps else None,
            "close to 1: the workers are not the bottleneck",
            True,
        ),
    ]
    report.table(
        f"3. slow upstream ({latency_ms} ms), distinct users, worker models",
        ["model", "conns", "requests", "302s", "errors", "req/s", "p50 ms", "p99 ms", "upstream calls"],
        [
            [
                r["model"],
                r["concurrency"],
                r["requests"],
                r["answered_302"],
                r["errors"],
                r["throughput_rps"],
                r["p50_ms"],
                r["p99_ms"],
                r["upstream_calls"],
            ]
            for r in runs
        ],
    )
    _print_checks(checks)
    data = {
        "emulator_latency_ms": latency_ms,
        "target_rps": target,
        "load_average_at_start": load_before,
        "runs": runs,
        "shipped_model": _label_of(shipped, models),
        "best": best["model"],
        "checks": checks,
    }
    report.write_json("slow_upstream", data, quick)
    report.chart(
        "slow_upstream",
        quick,
        f"slow upstream ({latency_ms} ms), one request per distinct user",
        latency={r["model"]: report.cdf_points(r["latencies_ms"]) for r in [ceiling, *at_top]},
        throughput={
            label: [(r["concurrency"], r["throughput_rps"]) for r in runs if r["model"] == label]
            for label in [UPSTREAM_ALONE] + [m["label"] for m in models]
        },
        target=None,
    )
    return data


def _label_of(gunicorn: dict, models: list[dict]) -> str | None:
    """The label of the model in `models` that runs as `gunicorn` (worker_class/workers/threads) does."""
    for model in models:
        same_threads = model["worker_class"] != "gthread" or model.get("threads") == gunicorn["threads"]
        same_model = (model["worker_class"], model["workers"]) == (gunicorn["worker_class"], gunicorn["workers"])
        if same_model and same_threads:
            return model["label"]
    return None


def _describe(gunicorn: dict) -> str:
    threads = f" x {gunicorn['threads']} threads" if gunicorn["worker_class"] == "gthread" else ""
    return f"{gunicorn['worker_class']}, {gunicorn['workers']} workers{threads}"


def _pool_run(
    label: str, level: int, count: int, answer: dict, upstream_calls: int, ok_status: int, keep_latencies: bool
) -> dict:
    results = answer["results"]
    ok = [r for r in results if r.get("status") == ok_status]
    elapsed = max(r["start"] + r["latency_ms"] / 1000 for r in results) - answer["started"]
    return {
        "model": label,
        "concurrency": level,
        "requests": count,
        "sent": len(results),
        "answered_302": len(ok),
        "errors": count - len(ok),
        "not_sent": count - len(results),
        "seconds": round(elapsed, 2),
        "throughput_rps": round(len(ok) / elapsed, 1),
        "upstream_calls": upstream_calls,
        **latency_summary(results),
        "latencies_ms": sorted(round(r["latency_ms"], 1) for r in results) if keep_latencies else [],
    }
