"""HTTP checks `scripts/image-test.sh` runs against the service container (stdlib + requests; 127.0.0.1 only).

    python scripts/image_smoke.py --service http://127.0.0.1:P --metrics http://127.0.0.1:M \
        --emulator http://127.0.0.1:E --link <signed URL>

Exits non-zero with one line saying which check failed.
"""

from __future__ import annotations

import argparse
import sys
from urllib.parse import urlsplit

import requests


def check(condition: bool, what: str) -> None:
    if not condition:
        sys.exit(f"image-test: FAILED: {what}")
    print(f"  ok: {what}")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--service", required=True)
    parser.add_argument("--metrics", required=True, help="the METRICS_BIND listener, e.g. http://127.0.0.1:9100")
    parser.add_argument("--emulator", required=True)
    parser.add_argument("--link", required=True, help="a signed /connect link made by the image's sign-url command")
    args = parser.parse_args()
    check(urlsplit(args.link).hostname == "127.0.0.1", "the signed link points at the container on 127.0.0.1")

    ready = requests.get(args.service + "/readyz", timeout=5)
    check(ready.status_code == 200 and ready.json()["cache_backend"] != "memory", "/readyz 200 with Redis")

    first = requests.get(args.link, allow_redirects=False, headers={"X-Request-ID": "image-test-1"}, timeout=30)
    check(first.status_code == 302, f"GET /connect/alice (signed) → 302 (got {first.status_code})")
    location = first.headers.get("Location", "")
    check(location.startswith(args.emulator + "/"), "Location is the emulator's linking page")
    check("session=ayr_ls_" in location and "jwt=" not in location, "the link is a Link Session (the default flow)")
    check(first.headers.get("Cache-Control") == "no-store", "Cache-Control: no-store")
    check(first.headers.get("X-Request-ID") == "image-test-1", "X-Request-ID echoed")

    page = requests.get(location, timeout=10)
    check(page.status_code == 200 and "Alice" in page.text, "the linking page opens the session and shows Alice")

    second = requests.get(args.link, headers={"Accept": "application/json"}, timeout=30)
    check(second.status_code == 200 and second.json()["cached"] is True, "second request served from the Redis cache")

    unsigned = requests.get(args.service + "/connect/alice", allow_redirects=False, timeout=10)
    check(unsigned.status_code == 401, "an unsigned request is refused (401)")

    public = requests.get(args.service + "/metrics", timeout=10)
    check(public.status_code == 404, "/metrics is not on the public port (404)")
    metrics = requests.get(args.metrics + "/metrics", timeout=10)
    check(
        metrics.status_code == 200
        and 'ayrshare_connect_cache_lookups_total{flow="session",result="hit"} 1.0' in metrics.text,
        "/metrics on the METRICS_BIND port counts the cache hit",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
