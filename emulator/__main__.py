"""Command line: `python -m emulator --domain D --public-key-file P --api-key K [...]`.

Prints `emulator listening on http://HOST:PORT` once it accepts connections (EmulatorProcess waits on the
health endpoint instead, but humans running demos look for this line).
"""

from __future__ import annotations

# Before anything else is imported: the server is gevent's (emulator/serving.py), and sleeps and locks in the app
# must yield to the other connections.
from gevent import monkey

monkey.patch_all()

import argparse  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402

from emulator import create_app  # noqa: E402
from emulator.config import (  # noqa: E402
    DEFAULT_WEBHOOK_RETRY_DELAYS,
    DEFAULT_WEBHOOK_TIMEOUT,
    EmulatorConfig,
    load_profiles,
    load_public_key,
)
from emulator.serving import make_server  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port to bind; 0 picks a free one")
    parser.add_argument("--domain", required=True, help="the domain registered at onboarding")
    parser.add_argument("--public-key-file", required=True, help="PEM public key registered for the domain")
    parser.add_argument(
        "--api-key", action="append", required=True, dest="api_keys", help="accepted API key (repeatable)"
    )
    parser.add_argument("--profiles-file", help="JSON object {profileKey: title}; unknown keys are refused")
    parser.add_argument("--link-base", help="base of generated URLs (default: this server's http://HOST:PORT/)")
    parser.add_argument(
        "--webhook-retry-delays",
        type=_delays,
        default=DEFAULT_WEBHOOK_RETRY_DELAYS,
        metavar="S,S",
        help="seconds before each webhook retry (default 5,30, the vendor's); tests use e.g. 0.2,0.5",
    )
    parser.add_argument(
        "--webhook-timeout",
        type=float,
        default=DEFAULT_WEBHOOK_TIMEOUT,
        metavar="S",
        help="seconds a webhook receiver has to answer (default 10, the vendor's)",
    )
    parser.add_argument(
        "--threads",
        action="store_true",
        help="accepted for compatibility; the server always serves each connection in a greenlet of its own",
    )
    parser.add_argument("--verbose", action="store_true", help="log one line per request")
    return parser.parse_args(argv)


def _delays(text: str) -> tuple[float, ...]:
    """`--webhook-retry-delays`: comma-separated seconds, possibly none at all (no retries)."""
    try:
        delays = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated seconds, e.g. 5,30") from None
    if any(delay < 0 for delay in delays):
        raise argparse.ArgumentTypeError("delays must be >= 0")
    return delays


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    public_key = load_public_key(args.public_key_file)
    profiles = load_profiles(args.profiles_file) if args.profiles_file else None

    server = make_server(args.host, args.port, verbose=args.verbose)
    origin = f"http://{args.host}:{server.server_port}"
    config = EmulatorConfig(
        domain=args.domain,
        public_key=public_key,
        api_keys=tuple(args.api_keys),
        profiles=profiles,
        # Default to this server so a browser in a demo can open the generated URLs.
        link_base=args.link_base or f"{origin}/",
        webhook_retry_delays=args.webhook_retry_delays,
        webhook_timeout=args.webhook_timeout,
    )
    server.app = create_app(config)

    print(f"emulator listening on {origin}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
