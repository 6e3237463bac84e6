"""Drive load from a separate process: wrk for throughput, bench/client.py where each answer must be checked.

`run_wrk` writes a Lua script holding the request paths (signed links, one per user, taken round-robin) and a `done`
hook that prints the summary and latency percentiles as one JSON line, so nothing is scraped from wrk's text output.
Both are bounded: wrk by `--duration` and `--timeout`, the client by its request list, `max_seconds` and timeouts.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PERCENTILES = [1, 5, 10, 20, 25, 30, 40, 50, 60, 70, 75, 80, 90, 95, 97.5, 99, 99.5, 99.9, 99.99, 100]
_MARK = "BENCH_JSON "

_LUA = """
paths = {%(paths)s}
local counter = 0
local marker = "%(mark)s"
local percentiles = {%(percentiles)s}

request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(marker)
  io.write(string.format('{"requests":%%d,"duration_us":%%d,"bytes":%%d,', summary.requests, summary.duration,
    summary.bytes))
  io.write(string.format('"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},',
    e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format('"latency_us":{"min":%%d,"max":%%d,"mean":%%.1f,"stdev":%%.1f,"percentiles":[',
    latency.min, latency.max, latency.mean, latency.stdev))
  for i, p in ipairs(percentiles) do
    local sep = ","
    if i == #percentiles then sep = "" end
    io.write(string.format('[%%g,%%d]%%s', p, latency:percentile(p), sep))
  end
  io.write("]}}\\n")
end
"""


@dataclass
class WrkResult:
    connections: int
    requests: int
    seconds: float
    errors: dict
    latency_us: dict
    raw: dict = field(repr=False, default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile_ms(self, p: float) -> float:
        for point, value in self.latency_us["percentiles"]:
            if point == p:
                return value / 1000
        raise KeyError(p)

    @property
    def error_count(self) -> int:
        return sum(self.errors.values())

    def as_dict(self) -> dict:
        return {
            "connections": self.connections,
            "requests": self.requests,
            "seconds": round(self.seconds, 3),
            "rps": round(self.rps, 1),
            "p50_ms": round(self.percentile_ms(50), 3),
            "p99_ms": round(self.percentile_ms(99), 3),
            "errors": self.errors,
            "latency_us": self.latency_us,
        }


def wrk_binary() -> str:
    binary = shutil.which("wrk")
    if binary is None:
        raise RuntimeError("wrk is not installed: apt-get install -y wrk (the benchmark's load generator)")
    return binary


def run_wrk(
    base_url: str, paths: list[str], connections: int, seconds: float, threads: int = 1, timeout_s: int = 10
) -> WrkResult:
    """wrk for `seconds` at `connections` open connections, cycling through `paths` (each a signed /connect link)."""
    script = _LUA % {
        "paths": ",".join(json.dumps(path) for path in paths),
        "mark": _MARK,
        "percentiles": ",".join(f"{p:g}" for p in PERCENTILES),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
        script_path = handle.name
    try:
        command = [
            wrk_binary(),
            f"-t{min(threads, connections)}",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            f"--timeout={timeout_s}s",
            "-s",
            script_path,
            base_url,
        ]
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + timeout_s + 30)
    finally:
        Path(script_path).unlink(missing_ok=True)
    line = next((ln for ln in completed.stdout.splitlines() if ln.startswith(_MARK)), None)
    if completed.returncode != 0 or line is None:
        raise RuntimeError(
            f"wrk failed ({completed.returncode}): {completed.stderr.strip() or completed.stdout[-500:]}"
        )
    data = json.loads(line[len(_MARK) :])
    return WrkResult(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=data["errors"],
        latency_us=data["latency_us"],
        raw=data,
    )


def run_client(job: dict, timeout: float) -> dict:
    """Run bench/client.py in its own process with `job`; returns its JSON answer."""
    completed = subprocess.run(
        [sys.executable, "-m", "bench.client"],
        input=json.dumps(job),
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=Path(__file__).resolve().parents[1],
    )
    if completed.returncode != 0:
        raise RuntimeError(f"bench.client failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return json.loads(completed.stdout)


def latency_summary(results: list[dict]) -> dict:
    """p50/p90/p99/max in ms over the answered requests (nearest-rank)."""
    values = sorted(r["latency_ms"] for r in results if "error" not in r)
    if not values:
        return {"p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}

    def rank(p: float) -> float:
        index = min(len(values) - 1, max(0, math.ceil(p / 100 * len(values)) - 1))
        return round(values[index], 1)

    return {"p50_ms": rank(50), "p90_ms": rank(90), "p99_ms": rank(99), "max_ms": round(values[-1], 1)}
