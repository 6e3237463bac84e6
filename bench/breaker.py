"""What the per-process circuit breaker costs Ayrshare during an outage (`python -m bench.breaker`).

Three instances × 2 gunicorn workers share one Redis; the emulator answers every call with a 500. Requests for
distinct users (no cache, no single-flight sharing) are sent round-robin across the instances for `--seconds`.
Reported: upstream calls made, answers by status, and how many calls a breaker shared through Redis would have
allowed at most (threshold × attempts per request): the number the choice in service/upstream/circuit.py trades
against.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter

import requests

from bench.stack import Stack

INSTANCES, WORKERS, THRESHOLD, ATTEMPTS_PER_REQUEST = 3, 2, 5, 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    statuses: Counter = Counter()
    with Stack(users=2000) as stack:
        users = list(stack.profiles)
        # Stack's request limits are already out of reach of one load generator: only the breaker decides.
        services = [
            stack.start_service(
                workers=WORKERS, CIRCUIT_FAILURE_THRESHOLD=str(THRESHOLD), CIRCUIT_COOLDOWN_SECONDS="10"
            )
            for _ in range(INSTANCES)
        ]
        stack.emulator.set_knobs(fault="500", fault_count=-1)
        started, sent = time.monotonic(), 0
        session = requests.Session()
        while time.monotonic() - started < args.seconds:
            path = stack.signed_path(users[sent % len(users)])
            answer = session.get(
                services[sent % INSTANCES].url + path,
                allow_redirects=False,
                timeout=30,
                headers={"Accept": "application/json"},
            )
            statuses[
                f"{answer.status_code} {answer.json()['error']['code']}" if answer.status_code >= 400 else "ok"
            ] += 1
            sent += 1
        calls = stack.upstream_calls()
    shared_bound = THRESHOLD * ATTEMPTS_PER_REQUEST
    print(
        f"{args.seconds:.0f} s outage, {INSTANCES} instances x {WORKERS} workers, threshold {THRESHOLD}, cool-down 10 s"
    )
    print(f"  requests: {sent}, answers: {dict(statuses)}")
    print(f"  upstream calls: {calls} (per-process breakers; bound {INSTANCES * WORKERS * shared_bound} per cool-down)")
    print(f"  a breaker shared through Redis would allow at most {shared_bound} per cool-down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
