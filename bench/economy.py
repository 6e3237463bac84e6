"""Scenarios 4 and 5 (targets of issue 17): upstream economy over a simulated day, and the service's memory footprint.

Upstream economy: the day is time-compressed by asking the emulator for short token lifetimes (30 s tokens with a
5 s margin stand in for Ayrshare's 5-minute default and the 60 s margin). Users click at random moments, sometimes
two or three times at once (double clicks, several tabs). The theoretical minimum per user follows from the click
times alone: a click needs a new token only when every earlier token has at most the margin left, so a greedy walk
over the clicks with a window of (lifetime - margin) counts the fewest upstream calls any service could make, for
tokens minted the upstream's latency after their click. "No wasted call" checks the same rule against the tokens the
emulator actually minted, whose whole-second `exp` can come out a second later than that.
"""

from __future__ import annotations

import math
import random
from datetime import datetime

from . import report
from .loadgen import latency_summary, run_client, run_wrk
from .scenarios import _print_checks, check
from .stack import Stack, load_average, pss_kib, rss_kib, user_name

LINK_KEY_PREFIX = "connect:link:v1:"
UPSTREAM_LATENCY_MS = 100
WORKER_RSS_TARGET_MIB = 80


def minimum_calls(
    click_times: list[float], lifetime: float, margin: float, mint_delay: float = 0.0, whole_second_exp: bool = False
) -> int:
    """Fewest token fetches that serve every click with a token that has more than the margin left.

    A fetch can start no earlier than the click that needs it, and the token is minted `mint_delay` later (the
    upstream's latency). With `whole_second_exp`, `exp` is `floor(minted) + lifetime`, as the emulator and Ayrshare
    mint it (a JWT NumericDate in whole seconds); without it, the token lives exactly `lifetime` from the click, the
    idealised figure.
    """
    calls, valid_until = 0, float("-inf")
    for moment in sorted(click_times):
        if moment >= valid_until:
            calls += 1
            minted = moment + mint_delay
            valid_until = (math.floor(minted) if whole_second_exp else moment) + lifetime - margin
    return calls


def click_schedule(users: list[str], day_seconds: float, mean_gap: float, seed: int = 6) -> list[tuple[float, str]]:
    rng = random.Random(seed)
    clicks = []
    for user in users:
        moment = rng.uniform(0, mean_gap)
        while moment < day_seconds:
            repeats = rng.choices([1, 2, 3], weights=[75, 18, 7])[0]  # double/triple clicks land together
            clicks.extend((moment, user) for _ in range(repeats))
            moment += rng.expovariate(1 / mean_gap)
    return sorted(clicks)


def upstream_economy(quick: bool = False) -> dict:
    day, lifetime, margin, stale = (8.0, 4, 1, 0) if quick else (600.0, 30, 5, 2)
    user_count, mean_gap = (4, 0.6) if quick else (40, 6.0)
    users = [user_name(i) for i in range(user_count)]
    clicks = click_schedule(users, day, mean_gap)
    load_before = load_average()
    with Stack(users=user_count) as stack:
        service = stack.start_service(LINK_MIN_REMAINING_SECONDS=str(margin), LINK_STALE_MIN_SECONDS=str(stale))
        gunicorn = service.gunicorn
        stack.emulator.set_knobs(latency_ms=UPSTREAM_LATENCY_MS, token_lifetime_seconds=lifetime)
        calls_before = stack.upstream_calls()
        # Signed for the whole day up front, as a backend handing out links would; JSON mode shows cached/expiresAt.
        paths = {user: stack.signed_path(user, ttl_seconds=int(day) + 3600) for user in users}
        answer = run_client(
            {
                "base_url": service.url,
                "mode": "pool",
                "concurrency": 32,
                "fresh_connections": True,
                "headers": {"Accept": "application/json"},
                "timeout": 30,
                "requests": [{"path": paths[user], "at": moment} for moment, user in clicks],
            },
            timeout=day + 300,
        )
        stats = stack.emulator.stats()
        upstream_total = stats["generate_calls"] - calls_before
        by_profile = stats["by_profile"]

    results = answer["results"]
    per_user = []
    wasted = stale_answers = 0
    for user in users:
        mine = sorted((r for r in results if clicks[r["i"]][1] == user), key=lambda r: r["start"])
        click_times = [r["start"] for r in mine]
        fresh = [r for r in mine if r.get("json", {}).get("cached") is False]
        wasted += _wasted_calls(mine, margin)
        stale_answers += sum(1 for r in mine if "json" in r and _expires(r) - r["start"] <= margin)
        per_user.append(
            {
                "user": user,
                "clicks": len(mine),
                "fresh_answers": len(fresh),
                "upstream_calls": by_profile.get(stack.profiles[user], 0),
                # The theoretical minimum for tokens as the upstream mints them: whole-second `exp`, minted no
                # earlier than the upstream's latency after the click. The idealised figure (a token living exactly
                # `lifetime` from the click) is kept beside it.
                "minimum": minimum_calls(
                    click_times, lifetime, margin, mint_delay=UPSTREAM_LATENCY_MS / 1000, whole_second_exp=True
                ),
                "minimum_idealised": minimum_calls(click_times, lifetime, margin),
            }
        )
    ok = [r for r in results if r.get("status") == 200 and "json" in r]
    total_min = sum(u["minimum"] for u in per_user)
    fresh_total = sum(u["fresh_answers"] for u in per_user)
    idealised = sum(u["minimum_idealised"] for u in per_user)
    checks = [
        check("answered 200 JSON", f"{len(ok)}/{len(clicks)}", "all", len(ok) == len(clicks)),
        check(
            "upstream calls (emulator) == fresh answers",
            f"{upstream_total} vs {fresh_total}",
            "equal",
            upstream_total == fresh_total,
        ),
        # The minimum assumes each token is minted exactly the upstream's latency after its click. A call that reaches
        # the emulator a few ms later can get the next whole second as `exp`, so its token lasts a second longer and
        # a later call may not be needed: the count can then be one under that figure. No wasted call is the exact
        # test against the tokens actually minted, and no stale answer shows nothing was saved by serving a token
        # with the margin used up.
        check(
            "upstream calls vs theoretical minimum (tokens as minted: whole-second exp)",
            f"{upstream_total} / {total_min}",
            "equal (at most: see the comment above)",
            upstream_total <= total_min,
        ),
        check("wasted calls (a served token still had > margin left)", wasted, "0", wasted == 0),
        check(
            "stale answers (a token with <= margin left when the click was made)",
            stale_answers,
            "0",
            stale_answers == 0,
        ),
        check(
            "context: idealised minimum (tokens living exactly the lifetime from the click)",
            idealised,
            "no service can reach it with whole-second exp",
            True,
        ),
    ]
    report.table(
        f"4. upstream economy ({day:.0f} s day, {lifetime} s tokens, {margin} s margin, {len(clicks)} clicks)",
        ["user", "clicks", "upstream calls", "theoretical minimum"],
        [[u["user"], u["clicks"], u["upstream_calls"], u["minimum"]] for u in per_user[:10]]
        + [["all users", len(results), upstream_total, total_min]],
    )
    _print_checks(checks)
    data = {
        "gunicorn": gunicorn,
        "day_seconds": day,
        "token_lifetime_seconds": lifetime,
        "margin_seconds": margin,
        "users": user_count,
        "clicks": len(clicks),
        "upstream_calls": upstream_total,
        "theoretical_minimum": total_min,
        "idealised_minimum": idealised,
        "calls_per_user": round(upstream_total / user_count, 2),
        "minimum_per_user": round(total_min / user_count, 2),
        "wasted_calls": wasted,
        "stale_answers": stale_answers,
        "latency": latency_summary(results),
        "latency_cdf_ms": report.cdf_points([r["latency_ms"] for r in results]),
        "per_user": per_user,
        "load_average_at_start": load_before,
        "checks": checks,
    }
    report.write_json("upstream_economy", data, quick)
    report.chart(
        "upstream_economy",
        quick,
        f"upstream economy: {upstream_total} calls for {len(clicks)} clicks (minimum {total_min})",
        latency={"click latency": report.cdf_points([r["latency_ms"] for r in results])},
        throughput={
            "upstream calls per user": [(i, u["upstream_calls"]) for i, u in enumerate(per_user)],
            "theoretical minimum": [(i, u["minimum"]) for i, u in enumerate(per_user)],
        },
        throughput_ylabel="upstream calls",
        right_title="upstream calls per user vs the minimum",
        right_xlabel="user",
    )
    return data


def _wasted_calls(answers: list[dict], margin: float) -> int:
    """Fresh answers given while an earlier answer's token kept more than the margin for the whole request."""
    wasted = 0
    for answer in answers:
        if answer.get("json", {}).get("cached") is not False:
            continue
        end = answer["start"] + answer["latency_ms"] / 1000
        for earlier in answers:
            done = earlier["start"] + earlier["latency_ms"] / 1000
            if earlier is answer or done >= answer["start"] or "json" not in earlier:
                continue
            if _expires(earlier) - margin > end:
                wasted += 1
                break
    return wasted


def _expires(answer: dict) -> float:
    return datetime.fromisoformat(answer["json"]["expiresAt"]).timestamp()


# -- 5. footprint --------------------------------------------------------------------------------------------------
def footprint(quick: bool = False) -> dict:
    user_count = 50 if quick else 1000
    users = [user_name(i) for i in range(user_count)]
    load_before = load_average()
    with Stack(users=user_count) as stack:
        service = stack.start_service()
        gunicorn = service.gunicorn
        redis = stack.redis.client()
        idle = {pid: rss_kib(pid) for pid in service.worker_pids()}
        memory_before = redis.info("memory")["used_memory"]
        calls_before = stack.upstream_calls()
        paths = [stack.signed_path(user) for user in users]
        warm = run_client(
            {
                "base_url": service.url,
                "mode": "pool",
                "concurrency": 16,
                "timeout": 30,
                "requests": [{"path": p} for p in paths],
            },
            timeout=600,
        )
        upstream_calls = stack.upstream_calls() - calls_before
        load = run_wrk(service.url, paths, 32, 1 if quick else 10)
        loaded = {pid: rss_kib(pid) for pid in service.worker_pids()}
        # Workers are forked from the master and share part of their pages with it: PSS counts shared pages once.
        pss = {pid: pss_kib(pid) for pid in loaded}
        master = rss_kib(service.proc.pid)
        keys = [k for k in redis.scan_iter(match=LINK_KEY_PREFIX + "*", count=1000) if k.count(b":") == 3]
        usages = [redis.memory_usage(k, samples=0) for k in keys]
        memory_after = redis.info("memory")["used_memory"]
        value_bytes = [redis.strlen(k) for k in keys[:50]]
    mib = 1024
    worst = max(loaded.values()) / mib
    per_link = sum(usages) / len(usages)
    mean_pss = sum(pss.values()) / len(pss) / mib
    checks = [
        check("cache warm-up upstream calls", upstream_calls, f"== {user_count}", upstream_calls == user_count),
        check("cached links in Redis", len(keys), f"== {user_count}", len(keys) == user_count),
        check(
            "RSS per worker after load (MiB, max)",
            round(worst, 1),
            f"<= {WORKER_RSS_TARGET_MIB}",
            worst <= WORKER_RSS_TARGET_MIB,
        ),
        check("PSS per worker after load (MiB, mean)", round(mean_pss, 1), "context: shared pages counted once", True),
    ]
    report.table(
        f"5. footprint ({gunicorn['worker_class']}, {len(loaded)} workers, {user_count} cached links)",
        ["what", "value"],
        [
            ["worker RSS idle (MiB)", ", ".join(f"{v / mib:.1f}" for v in idle.values())],
            ["worker RSS after warm-up + 32-conn load (MiB)", ", ".join(f"{v / mib:.1f}" for v in loaded.values())],
            ["worker PSS after the same (MiB)", ", ".join(f"{v / mib:.1f}" for v in pss.values())],
            ["master RSS (MiB)", round(master / mib, 1)],
            ["Redis MEMORY USAGE per cached link (bytes, mean)", round(per_link)],
            ["Redis used_memory growth per link (bytes)", round((memory_after - memory_before) / user_count)],
            ["stored value per link (bytes, mean)", round(sum(value_bytes) / len(value_bytes))],
            ["load during measurement (req/s, errors)", f"{load.rps:.0f}, {load.error_count}"],
        ],
    )
    _print_checks(checks)
    data = {
        "gunicorn": gunicorn,
        "users": user_count,
        "warm_errors": sum(1 for r in warm["results"] if r.get("status") != 302),
        "worker_rss_idle_kib": list(idle.values()),
        "worker_rss_loaded_kib": list(loaded.values()),
        "worker_pss_loaded_kib": list(pss.values()),
        "master_rss_kib": master,
        "redis_memory_usage_per_link_bytes": per_link,
        "redis_used_memory_growth_per_link_bytes": (memory_after - memory_before) / user_count,
        "stored_value_bytes_mean": sum(value_bytes) / len(value_bytes),
        "load": load.as_dict(),
        "upstream_calls": upstream_calls,
        "load_average_at_start": load_before,
        "checks": checks,
    }
    report.write_json("footprint", data, quick)
    report.chart(
        "footprint",
        quick,
        "footprint under 32-connection cache-hit load",
        latency={"cache hits @32": [(p, v / 1000) for p, v in load.latency_us["percentiles"] if p <= 99.9]},
        throughput={"cache hits": [(32, load.rps)]},
    )
    return data
