"""`python -m bench [--scenario NAME ...] [--quick]`: run the benchmark scenarios (all by default) and summarise."""

from __future__ import annotations

import argparse
import json
import sys
import time

from . import report
from .economy import footprint, upstream_economy
from .scenarios import cache_hit, cold_burst
from .slow_upstream import slow_upstream
from .stack import load_average

SCENARIOS = {
    "cache_hit": cache_hit,
    "cold_burst": cold_burst,
    "slow_upstream": slow_upstream,
    "upstream_economy": upstream_economy,
    "footprint": footprint,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--scenario", action="append", choices=[*SCENARIOS, "profile"], help="repeatable; default all")
    parser.add_argument("--quick", action="store_true", help="smoke-sized runs (seconds): checks wiring, not speed")
    args = parser.parse_args(argv)
    names = args.scenario or list(SCENARIOS)
    print(f"machine: {json.dumps(report.machine())}; load average at start: {load_average()}", flush=True)
    summary = {}
    for name in names:
        started = time.monotonic()
        if name == "profile":
            from .profile_hot_path import profile

            profile(quick=args.quick)
            continue
        data = SCENARIOS[name](quick=args.quick)
        summary[name] = {
            "seconds": round(time.monotonic() - started, 1),
            "met": all(item["met"] for item in data["checks"]),
            "missed": [item["check"] for item in data["checks"] if not item["met"]],
        }
        print(f"[{name}] {summary[name]['seconds']} s; load average now {load_average()}", flush=True)
    print("\n## summary")
    for name, outcome in summary.items():
        print(f"  {name}: {'all targets met' if outcome['met'] else 'missed: ' + '; '.join(outcome['missed'])}")
    print(f"results: {report.RESULTS_DIR}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
