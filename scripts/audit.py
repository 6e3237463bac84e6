"""`make audit`: pip-audit over the runtime lock, with a vulnerability service shown to work first.

pip-audit asks a service about every pinned release: OSV (api.osv.dev), or PyPI's JSON API
(/pypi/<name>/<version>/json). Neither keeps a copy on this machine, and a failed look-up is not always loud: OSV
unreachable crashes pip-audit, but a PyPI stand-in without the per-release API makes it skip every package and exit 0
("could not be audited"). So each service is first asked about a release with published advisories (PROBE): the
first that reports them audits the lock, `--strict` (a package it cannot audit fails the run), and the exit status is
pip-audit's (1 on any finding).

Only when no service reports the probe's advisories does this print "vulnerability service unreachable" and exit 0:
the lock was then not audited, and CI says so in its log. Anything else unexpected exits 2.

    python scripts/audit.py requirements.lock
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

SERVICES = ("osv", "pypi")
PROBE = "requests==2.19.1"  # CVE-2018-18074, CVE-2023-32681, CVE-2024-35195, ...: every service knows some of them
TIMEOUT = "20"
# What pip-audit's traceback or error says when the service cannot be reached (DNS, TCP, TLS, time-out, 5xx).
NETWORK_ERROR = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Timeout|NameResolutionError|Max retries exceeded|SSLError|"
    r"ServiceError|Temporary failure in name resolution|Connection refused|Network is unreachable"
)

Runner = Callable[[list[str]], subprocess.CompletedProcess]


def pip_audit(args: list[str]) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip_audit", "--progress-spinner", "off", "--timeout", TIMEOUT, *args]
    return subprocess.run(command, capture_output=True, text=True, check=False)


def probe(service: str, run: Runner) -> tuple[bool, str]:
    """(works, why not): whether `service` reports the advisories of PROBE."""
    with tempfile.TemporaryDirectory() as work:
        requirements = Path(work) / "probe.txt"
        requirements.write_text(PROBE + "\n")
        result = run(["-r", str(requirements), "--no-deps", "--disable-pip", "-s", service, "-f", "json"])
    try:
        report = json.loads(result.stdout)
        (dependency,) = report["dependencies"]
    except (ValueError, KeyError, TypeError) as error:
        errors = result.stderr.strip().splitlines()
        if NETWORK_ERROR.search(result.stderr):
            return False, f"did not answer ({errors[-1][:200] if errors else 'no output'})"
        message = f"pip-audit -s {service} failed unexpectedly (exit {result.returncode}):\n{result.stderr}"
        raise RuntimeError(message) from error
    if dependency.get("vulns"):
        return True, ""
    if dependency.get("skip_reason"):
        return False, f"answered without the release's data ({dependency['skip_reason']})"
    return False, f"answered with no advisory for {PROBE}, which has several"


def main(argv: list[str], run: Runner = pip_audit) -> int:
    if len(argv) != 1:
        print("usage: python scripts/audit.py requirements.lock", file=sys.stderr)
        return 2
    lock = argv[0]
    reasons = []
    for service in SERVICES:
        try:
            works, why = probe(service, run)
        except RuntimeError as error:
            print(f"audit: {error}", file=sys.stderr)
            return 2
        if not works:
            reasons.append(f"{service}: {why}")
            continue
        print(f"audit: pip-audit -s {service} over {lock} (the service reported {PROBE}'s advisories)", flush=True)
        result = run(["-r", lock, "--require-hashes", "--disable-pip", "--strict", "-s", service])
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr)
        if result.returncode:
            print(f"audit: FAILED: pip-audit exited with {result.returncode} (findings above)", file=sys.stderr)
        return result.returncode
    print(f"audit: vulnerability service unreachable: {lock} NOT audited", flush=True)
    for reason in reasons:
        print(f"audit:   {reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
