"""What the per-process circuit breaker costs Ayrshare during an outage (`python -m bench.breaker`).

Three instances × 2 gunicorn workers share one Redis; the emulator answers every call with a 500. Requests for
distinct users (no cache, no single-flight sharing) are sent round-robin across the instances for `--seconds`.
Reported: upstream calls made, answers by status, and how many calls a breaker shared through Redis would have
allowed at most (threshold × attempts per request) — the number the choice in service/circuit.py trades against.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path

import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.callers import signed_path
from tests.support.emulator_proc import EmulatorProcess
from tests.support.processes import RedisServer, ServiceProcess

API_KEY = "breaker-api-key-0123456789"
SECRET = "breaker-signing-secret-0123456789abcdef"
INSTANCES, WORKERS, THRESHOLD, ATTEMPTS_PER_REQUEST = 3, 2, 5, 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="breaker-"))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    (workdir / "public.pem").write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    users = [f"user{i}" for i in range(2000)]
    (workdir / "profiles.json").write_text(json.dumps({user: f"PK-{user}" for user in users}))
    redis_server = RedisServer().start()
    emulator = EmulatorProcess(domain="BRK", public_key_path=workdir / "public.pem", api_keys=[API_KEY]).start()
    env = {
        "AYRSHARE_API_KEY": API_KEY,
        "AYRSHARE_PRIVATE_KEY": private_pem,
        "AYRSHARE_DOMAIN": "BRK",
        "AYRSHARE_BASE_URL": emulator.base_url,
        "LINK_ALLOWED_HOSTS": emulator.origin,
        "PROFILE_KEYS_FILE": str(workdir / "profiles.json"),
        "REDIS_URL": redis_server.url,
        "CONNECT_SIGNING_SECRET": SECRET,
        "CIRCUIT_FAILURE_THRESHOLD": str(THRESHOLD),
        "CIRCUIT_COOLDOWN_SECONDS": "10",
        # One load generator on one address: lift the request limits so that only the breaker decides.
        "RATE_LIMIT_PER_ADDRESS": "100000000/minute",
        "RATE_LIMIT_PER_USER": "100000/minute",
        "RATE_LIMIT_UPSTREAM_PER_USER": "100000/minute",
        "LOG_LEVEL": "WARNING",
    }
    services = [ServiceProcess(env, workers=WORKERS).start() for _ in range(INSTANCES)]
    emulator.set_knobs(fault="500", fault_count=-1)
    statuses: Counter = Counter()
    started, sent = time.monotonic(), 0
    try:
        session = requests.Session()
        while time.monotonic() - started < args.seconds:
            service = services[sent % INSTANCES]
            answer = session.get(
                service.url + signed_path(users[sent % len(users)], SECRET),
                allow_redirects=False,
                timeout=30,
                headers={"Accept": "application/json"},
            )
            statuses[
                f"{answer.status_code} {answer.json()['error']['code']}" if answer.status_code >= 400 else "ok"
            ] += 1
            sent += 1
        calls = emulator.calls()
    finally:
        for service in services:
            service.stop()
            service.remove_log()
        emulator.stop()
        redis_server.stop()
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
