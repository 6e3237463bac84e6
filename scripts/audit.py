"""`make audit`: pip-audit over the runtime lock, with a vulnerability service shown to work first.

pip-audit asks a service about every pinned release: OSV (api.osv.dev), or PyPI's JSON API
(/pypi/<name>/<version>/json). Neither keeps a copy on this machine, and a failed look-up is not always loud: OSV
unreachable crashes pip-audit, but a PyPI stand-in without the per-release API makes it skip every package and exit 0
("could not be audited"). So each service is first asked about a release with published advisories (PROBE): the
first that reports them audits the lock, `--strict` (a package it cannot audit fails the run), and the exit status is
pip-audit's (1 on any finding).

When neither does, PyPI's project JSON (/pypi/<name>/json) may still answer: it lists the advisories of a project's
latest release only, so each pin that is its project's latest release is audited from it, once a probe project whose
latest release has advisories (LATEST_PROBE) shows the data is there; a finding exits 1, and the pins it cannot cover
are named as not audited. Only when nothing answers does this print "NOT audited" and exit 0, so CI says so in its
log. Anything else unexpected exits 2.

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

import requests
from check_pins import read_lock  # scripts/ is on sys.path when this runs as a script
from packaging.version import Version

SERVICES = ("osv", "pypi")
PROBE = "requests==2.19.1"  # CVE-2018-18074, CVE-2023-32681, CVE-2024-35195, ...: every service knows some of them
TIMEOUT = "20"
PYPI_JSON = "https://pypi.org/pypi"
LATEST_PROBE = "pycrypto"  # its latest release, 2.6.1 (2013, unmaintained), has PYSEC-2017-94 and others
# What pip-audit's traceback or error says when the service cannot be reached (DNS, TCP, TLS, time-out, 5xx).
NETWORK_ERROR = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|Timeout|NameResolutionError|Max retries exceeded|SSLError|"
    r"ServiceError|Temporary failure in name resolution|Connection refused|Network is unreachable"
)

Runner = Callable[[list[str]], subprocess.CompletedProcess]
ProjectJson = Callable[[str], dict]  # project name -> PyPI's /pypi/<name>/json document


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


def pypi_project_json(name: str) -> dict:
    response = requests.get(f"{PYPI_JSON}/{name}/json", timeout=float(TIMEOUT))
    response.raise_for_status()
    return response.json()


def latest_advisories(name: str, project_json: ProjectJson) -> tuple[str, list[dict]]:
    """(the project's latest version, the advisories PyPI lists for that release, withdrawn ones left out)."""
    document = project_json(name)
    advisories = [entry for entry in document.get("vulnerabilities") or [] if not entry.get("withdrawn")]
    return document["info"]["version"], advisories


def audit_latest_releases(lock: str, project_json: ProjectJson) -> int:
    """Audit each pin that is its project's latest release from PyPI's project JSON; 1 on a finding."""
    try:
        _, probe_advisories = latest_advisories(LATEST_PROBE, project_json)
    except (requests.RequestException, ValueError, KeyError) as error:
        probe_advisories, why = [], f"did not answer ({type(error).__name__})"
    else:
        why = f"answered with no advisory for {LATEST_PROBE}'s latest release, which has several"
    if not probe_advisories:
        print(f"audit: PyPI's project JSON {why}: {lock} NOT audited", flush=True)
        return 0
    findings, uncovered, audited = [], [], 0
    pins = read_lock(Path(lock))
    for name, pinned in sorted(pins.items()):
        try:
            latest, advisories = latest_advisories(name, project_json)
        except (requests.RequestException, ValueError, KeyError) as error:
            uncovered.append(f"{name} {pinned} (no project JSON: {type(error).__name__})")
            continue
        if Version(latest) != pinned:
            uncovered.append(f"{name} {pinned} (latest {latest})")
            continue
        audited += 1
        findings += [
            f"{name} {pinned}: {entry.get('id')} (fixed in {', '.join(entry.get('fixed_in') or ['?'])})"
            for entry in advisories
        ]
    print(
        f"audit: PyPI's project JSON over {lock}: {audited} of {len(pins)} pins audited (their project's latest "
        f"release, whose advisories it lists)",
        flush=True,
    )
    if uncovered:
        print(f"audit: NOT audited, not their project's latest release: {'; '.join(uncovered)}", flush=True)
    if findings:
        print("audit: FAILED: known vulnerabilities:\n" + "\n".join(f"audit:   {f}" for f in findings), file=sys.stderr)
        return 1
    print("audit: no known vulnerabilities in the audited pins", flush=True)
    return 0


def main(argv: list[str], run: Runner = pip_audit, project_json: ProjectJson = pypi_project_json) -> int:
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
    print("audit: pip-audit reached no vulnerability service:", flush=True)
    for reason in reasons:
        print(f"audit:   {reason}")
    return audit_latest_releases(lock, project_json)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
