"""Scenarios 4 and 5 (targets of issue 17): upstream economy over a simulated day, and the service's memory footprint.

Upstream economy: the day is time-compressed by asking the emulator for short token lifetimes (30 s tokens with a
5 s margin stand in for Ayrshare's 5-minute default and the 60 s margin). Users click at random moments, sometimes
two or three times at once (double clicks, several tabs). The theoretical minimum per user follows from the click
times alone: a click needs a new token only when every earlier token has at most the margin left, so a greedy walk
over the clicks with a window of (lifetime - margin) counts the fewest upstream calls any service could make, for
tokens minted the upstream's latency after their click. "No wasted call" checks the same rule against the tokens the
emulator actually minted, whose whole-second `exp` can come out a second later than that.

The day runs in both link flows at once (session, the default, and jwt), each with its own service and users, and is
checked per flow: a generateJWT token's `exp` is a whole second, a Link Session's `expiresAt` a millisecond (the
service's JSON `expiresAt` rounds both down to the second; see `_attach_expiry_bounds`). The footprint runs in the
default flow.
"""

from __future__ import annotations

import math
import random
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from . import report
from .loadgen import latency_summary, run_client, run_wrk
from .scenarios import _counts_text, _print_checks, check
from .stack import DEFAULT_FLOW, FLOWS, Stack, counter_by, load_average, pss_kib, rss_kib, user_name

# The service's Redis keys: a cached link is `connect:link:v1:{scope}:<digest>` (its fetch lock and failure marker
# add a `:lock` / `:error` suffix); each user's index of the links handed out is `connect:user:v1:{scope}:links`.
LINK_KEY_PREFIX = "connect:link:v1:"
USER_INDEX_PATTERN = "connect:user:v1:{*}:links"
UPSTREAM_LATENCY_MS = 100
WORKER_RSS_TARGET_MIB = 80


def minimum_calls(
    click_times: list[float], lifetime: float, margin: float, mint_delay: float = 0.0, whole_second_exp: bool = False
) -> int:
    """Fewest token fetches that serve every click with a token that has more than the margin left.

    A fetch can start no earlier than the click that needs it, and the token is minted `mint_delay` later (the
    upstream's latency). With `whole_second_exp`, `exp` is `floor(minted) + lifetime`, as the emulator and Ayrshare
    mint a generateJWT token (a JWT NumericDate in whole seconds); without it, the link lives exactly `lifetime` from
    when it is minted, as a Link Session's millisecond `expiresAt` says. With no `mint_delay` either, it lives
    `lifetime` from the click: the idealised figure.
    """
    calls, valid_until = 0, float("-inf")
    for moment in sorted(click_times):
        if moment >= valid_until:
            calls += 1
            minted = moment + mint_delay
            valid_until = (math.floor(minted) if whole_second_exp else minted) + lifetime - margin
    return calls


def click_schedule(users: list[str], day_seconds: float, mean_gap: float, seed: int = 6) -> list[tuple[float, str]]:
    """Random clicks over the day; the same seed and number of users give the same click times, whatever the names."""
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
    """The day in each link flow (FLOWS): two services, one per flow, each with its own users (`session00000`,
    `jwt00000`, ...) clicking on the same schedule, run at the same time against one emulator. The emulator counts
    each profile's calls whichever endpoint made them, so every flow's users are accounted for on their own."""
    day, lifetime, margin, stale = (8.0, 4, 1, 0) if quick else (600.0, 30, 5, 2)
    user_count, mean_gap = (4, 0.6) if quick else (40, 6.0)
    users = {flow: [user_name(i, flow) for i in range(user_count)] for flow in FLOWS}
    clicks = {flow: click_schedule(users[flow], day, mean_gap) for flow in FLOWS}
    load_before = load_average()
    with Stack(users=user_count, prefixes=FLOWS) as stack:
        services = {
            flow: stack.start_service(
                flow=flow, LINK_MIN_REMAINING_SECONDS=str(margin), LINK_STALE_MIN_SECONDS=str(stale)
            )
            for flow in FLOWS
        }
        gunicorn = services[DEFAULT_FLOW].gunicorn
        stack.emulator.set_knobs(latency_ms=UPSTREAM_LATENCY_MS, token_lifetime_seconds=lifetime)
        stats_before = stack.emulator.stats()
        with ThreadPoolExecutor(len(FLOWS)) as pool:
            pending = {
                flow: pool.submit(run_client, _day_job(stack, services[flow], clicks[flow], day), day + 300)
                for flow in FLOWS
            }
            answers = {flow: future.result() for flow, future in pending.items()}
        stats = stack.emulator.stats()
        service_metrics = {
            flow: {
                "upstream_calls": counter_by(service, "ayrshare_connect_upstream_calls", "flow"),
                "cache_lookups": counter_by(service, "ayrshare_connect_cache_lookups", "flow"),
            }
            for flow, service in services.items()
        }
        profiles = stack.profiles
    endpoint_calls = {
        "session": stats["link_session_calls"] - stats_before["link_session_calls"],
        "jwt": stats["generate_calls"] - stats_before["generate_calls"],
    }
    by_flow = {
        flow: _day_result(
            flow,
            users[flow],
            clicks[flow],
            answers[flow]["results"],
            {user: stats["by_profile"].get(profiles[user], 0) for user in users[flow]},
            endpoint_calls[flow],
            service_metrics[flow],
            lifetime,
            margin,
        )
        for flow in FLOWS
    }
    checks = [item for result in by_flow.values() for item in result.pop("checks")]
    report.table(
        f"4. upstream economy ({day:.0f} s day, {lifetime} s tokens, {margin} s margin, {len(clicks[DEFAULT_FLOW])}"
        " clicks per flow): first users",
        ["flow", "user", "clicks", "upstream calls", "theoretical minimum"],
        [
            [flow, u["user"], u["clicks"], u["upstream_calls"], u["minimum"]]
            for flow, result in by_flow.items()
            for u in result["per_user"][:5]
        ],
    )
    report.table(
        "4. upstream economy, per link flow (both days at once, same click times)",
        ["flow", "clicks answered", "upstream calls", "theoretical minimum", "wasted", "stale", "idealised minimum"],
        [
            [
                flow,
                f"{r['answered']} of {r['clicks']}",
                r["upstream_calls"],
                r["theoretical_minimum"],
                r["wasted_calls"],
                r["stale_answers"],
                r["idealised_minimum"],
            ]
            for flow, r in by_flow.items()
        ],
    )
    _print_checks(checks)
    data = {
        "gunicorn": gunicorn,
        "day_seconds": day,
        "token_lifetime_seconds": lifetime,
        "margin_seconds": margin,
        "users": user_count,
        "flows": list(FLOWS),
        "by_flow": by_flow,
        "load_average_at_start": load_before,
        "checks": checks,
    }
    report.write_json("upstream_economy", data, quick)
    report.chart(
        "upstream_economy",
        quick,
        "upstream economy: "
        + "; ".join(
            f"{flow} {r['upstream_calls']} calls for {r['clicks']} clicks (minimum {r['theoretical_minimum']})"
            for flow, r in by_flow.items()
        ),
        latency={f"{flow}: click latency": r["latency_cdf_ms"] for flow, r in by_flow.items()},
        throughput={
            label: points
            for flow, r in by_flow.items()
            for label, points in (
                (f"{flow}: upstream calls per user", [(i, u["upstream_calls"]) for i, u in enumerate(r["per_user"])]),
                (f"{flow}: theoretical minimum", [(i, u["minimum"]) for i, u in enumerate(r["per_user"])]),
            )
        },
        throughput_ylabel="upstream calls",
        right_title="upstream calls per user vs the minimum",
        right_xlabel="user",
    )
    return data


def _day_job(stack: Stack, service, clicks: list[tuple[float, str]], day: float) -> dict:
    # Signed for the whole day up front, as a backend handing out links would; JSON mode shows cached/expiresAt.
    paths = {user: stack.signed_path(user, ttl_seconds=int(day) + 3600) for user in {user for _, user in clicks}}
    return {
        "base_url": service.url,
        "mode": "pool",
        "concurrency": 32,
        "fresh_connections": True,
        "headers": {"Accept": "application/json"},
        "timeout": 30,
        "requests": [{"path": paths[user], "at": moment} for moment, user in clicks],
    }


def _day_result(
    flow: str,
    users: list[str],
    clicks: list[tuple[float, str]],
    results: list[dict],
    calls_by_user: dict[str, int],
    endpoint_calls: int,
    service_metrics: dict[str, dict[str, float]],
    lifetime: float,
    margin: float,
) -> dict:
    """One flow's day: per-user calls against the minimum, wasted calls and stale answers, and its checks."""
    per_user = []
    wasted = stale_answers = 0
    uncertainty = 0.0  # the widest (latest - earliest) expiry of a served link, in seconds
    for user in users:
        mine = sorted((r for r in results if clicks[r["i"]][1] == user), key=lambda r: r["start"])
        _attach_expiry_bounds(mine, flow, lifetime)
        uncertainty = max([uncertainty, *(r["expiry_bounds"][1] - r["expiry_bounds"][0] for r in mine if "json" in r)])
        click_times = [r["start"] for r in mine]
        fresh = [r for r in mine if r.get("json", {}).get("cached") is False]
        wasted += _wasted_calls(mine, margin)
        # Stale: the link had at most the margin left when the click was made, even at the latest it can expire.
        stale_answers += sum(1 for r in mine if "expiry_bounds" in r and r["expiry_bounds"][1] - r["start"] <= margin)
        per_user.append(
            {
                "user": user,
                "clicks": len(mine),
                "fresh_answers": len(fresh),
                "upstream_calls": calls_by_user[user],
                # The theoretical minimum for links as the upstream mints them, no earlier than its latency after the
                # click: generateJWT's whole-second `exp`, or a Link Session's `expiresAt` to the millisecond. The
                # idealised figure (a link living exactly `lifetime` from the click) is kept beside it.
                "minimum": minimum_calls(
                    click_times,
                    lifetime,
                    margin,
                    mint_delay=UPSTREAM_LATENCY_MS / 1000,
                    whole_second_exp=flow == "jwt",
                ),
                "minimum_idealised": minimum_calls(click_times, lifetime, margin),
            }
        )
    ok = [r for r in results if r.get("status") == 200 and "json" in r]
    upstream_total = sum(calls_by_user.values())
    total_min = sum(u["minimum"] for u in per_user)
    fresh_total = sum(u["fresh_answers"] for u in per_user)
    idealised = sum(u["minimum_idealised"] for u in per_user)
    checks = [
        check(f"[{flow}] answered 200 JSON", f"{len(ok)}/{len(clicks)}", "all", len(ok) == len(clicks)),
        check(
            f"[{flow}] upstream calls (emulator) == fresh answers",
            f"{upstream_total} vs {fresh_total}",
            "equal",
            upstream_total == fresh_total,
        ),
        # The flow's calls all went to its own endpoint, and the service counted them (and every lookup) under its
        # flow label. The other flow's service runs at the same time, against the other endpoint.
        check(
            f"[{flow}] calls at the flow's endpoint == its users' calls; service metrics (flow label) agree",
            f"endpoint {endpoint_calls}, metrics upstream {_counts_text(service_metrics['upstream_calls'])},"
            f" lookups {_counts_text(service_metrics['cache_lookups'])}",
            f"{upstream_total} calls, {len(ok)} lookups, all flow={flow}",
            endpoint_calls == upstream_total
            and service_metrics["upstream_calls"] == {flow: upstream_total}
            and service_metrics["cache_lookups"] == {flow: len(ok)},
        ),
        # The minimum assumes each link is minted exactly the upstream's latency after its click. A call that reaches
        # the emulator a few ms later gets a link that lives a little longer (for generateJWT, possibly a whole
        # second: the next whole second as `exp`), and a later call may not be needed: the count can then be under
        # that figure. No wasted call is the exact test against the links actually minted, and no stale answer shows
        # nothing was saved by serving a link with the margin used up.
        check(
            f"[{flow}] upstream calls vs theoretical minimum (links as minted)",
            f"{upstream_total} / {total_min}",
            "equal (at most: see the comment above)",
            upstream_total <= total_min,
        ),
        check(f"[{flow}] wasted calls (a served link still had > margin left)", wasted, "0", wasted == 0),
        check(
            f"[{flow}] stale answers (a link with <= margin left when the click was made)",
            stale_answers,
            "0",
            stale_answers == 0,
        ),
        check(
            f"[{flow}] context: idealised minimum (links living exactly the lifetime from the click)",
            idealised,
            "not reachable with whole-second exp"
            if flow == "jwt"
            else "context: a link minted after its click lives longer",
            True,
        ),
    ]
    return {
        "flow": flow,
        "clicks": len(clicks),
        "answered": len(ok),
        "upstream_calls": upstream_total,
        "endpoint_calls": endpoint_calls,
        "service_metrics": service_metrics,
        "theoretical_minimum": total_min,
        "idealised_minimum": idealised,
        "calls_per_user": round(upstream_total / len(users), 2),
        "minimum_per_user": round(total_min / len(users), 2),
        "wasted_calls": wasted,
        "stale_answers": stale_answers,
        "expiry_uncertainty_ms_max": round(uncertainty * 1000, 1),
        "met": all(item["met"] for item in checks),
        "latency": latency_summary(results),
        "latency_cdf_ms": report.cdf_points([r["latency_ms"] for r in results]),
        "per_user": per_user,
        "checks": checks,
    }


def _attach_expiry_bounds(answers: list[dict], flow: str, lifetime: float) -> None:
    """Set `expiry_bounds` (earliest, latest Unix time the link can expire) on each JSON answer of one user.

    The service's `expiresAt` is in whole seconds, rounded down. A generateJWT link's `exp` is a whole second: the
    bounds are that second. A Link Session expires to the millisecond, `lifetime` after the emulator answered the
    create: within the second `expiresAt` names, and within `lifetime` of the call that minted the URL, which left no
    earlier than the first click served that URL plus the upstream's latency, and was answered before the first
    answer carrying it ended."""
    by_url: dict[str, list[dict]] = {}
    for answer in answers:
        if "json" in answer:
            by_url.setdefault(answer["json"]["url"], []).append(answer)
    for served in by_url.values():
        earliest_click = min(r["start"] for r in served)
        earliest_end = min(r["start"] + r["latency_ms"] / 1000 for r in served)
        for answer in served:
            whole = _expires(answer)
            if flow == "jwt":
                answer["expiry_bounds"] = (whole, whole)
                continue
            low = max(whole, earliest_click + UPSTREAM_LATENCY_MS / 1000 + lifetime)
            high = min(whole + 1, earliest_end + lifetime)
            answer["expiry_bounds"] = (low, high) if low <= high else (whole, whole + 1)


def _wasted_calls(answers: list[dict], margin: float) -> int:
    """Fresh answers given while an earlier answer's link kept more than the margin for the whole request, even at
    the earliest it can expire."""
    wasted = 0
    for answer in answers:
        if answer.get("json", {}).get("cached") is not False:
            continue
        end = answer["start"] + answer["latency_ms"] / 1000
        for earlier in answers:
            done = earlier["start"] + earlier["latency_ms"] / 1000
            if earlier is answer or done >= answer["start"] or "expiry_bounds" not in earlier:
                continue
            if earlier["expiry_bounds"][0] - margin > end:
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
        keys = [k for k in redis.scan_iter(match=LINK_KEY_PREFIX + "{*}:*", count=1000) if _is_link_key(k)]
        usages = [redis.memory_usage(k, samples=0) for k in keys]
        index_usages = [redis.memory_usage(k, samples=0) for k in redis.scan_iter(match=USER_INDEX_PATTERN, count=1000)]
        memory_after = redis.info("memory")["used_memory"]
        value_bytes = [redis.strlen(k) for k in keys[:50]]
    mib = 1024
    worst = max(loaded.values()) / mib
    per_link = sum(usages) / len(usages)
    per_index = sum(index_usages) / len(index_usages) if index_usages else 0
    mean_pss = sum(pss.values()) / len(pss) / mib
    checks = [
        check("cache warm-up upstream calls", upstream_calls, f"== {user_count}", upstream_calls == user_count),
        check("cached links in Redis", len(keys), f"== {user_count}", len(keys) == user_count),
        check("users' link indexes in Redis", len(index_usages), f"== {user_count}", len(index_usages) == user_count),
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
            ["Redis MEMORY USAGE per user's link index (bytes, mean)", round(per_index)],
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
        "redis_memory_usage_per_user_index_bytes": per_index,
        "user_indexes": len(index_usages),
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


def _is_link_key(key: bytes) -> bool:
    """A cached link's key, not its lock or failure marker: nothing after the digest that follows the hash tag."""
    return key.startswith(LINK_KEY_PREFIX.encode()) and key.rpartition(b"}")[2].count(b":") == 1
