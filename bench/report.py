"""What a scenario leaves behind: a printed table, a JSON file and a PNG chart in bench/results/ (git-ignored).

Every result records the machine's load average at the time, because the load generator, the service, Redis and
the emulator share two cores with whatever else runs: numbers are for comparing side by side, not for quoting.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path

from service.timefmt import iso_time

from .stack import load_average

RESULTS_DIR = Path(os.environ.get("BENCH_RESULTS_DIR", Path(__file__).resolve().parent / "results"))


def machine() -> dict:
    cpu_model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu_model = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal")
    )
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu_model,
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def table(title: str, columns: list[str], rows: list[list[object]]) -> str:
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [max(len(col), *(len(row[i]) for row in cells)) if cells else len(col) for i, col in enumerate(columns)]
    lines = [f"\n## {title}", "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |"]
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    for row in cells:
        lines.append("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


def source_version() -> dict:
    """Which code was measured: the commit, and whether service/ or config/ had uncommitted changes."""
    root = Path(__file__).resolve().parents[1]

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    return {
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted": git("status", "--porcelain", "service", "config"),
    }


def write_json(name: str, data: dict, quick: bool) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}{'-quick' if quick else ''}.json"
    record = {
        "scenario": name,
        "quick": quick,
        "finished_at": iso_time(time.time()),
        "load_average_at_end": load_average(),
        "machine": machine(),
        "source": source_version(),
        **data,
    }
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def chart(
    name: str,
    quick: bool,
    title: str,
    latency: dict[str, list[tuple[float, float]]],
    throughput: dict[str, list[tuple[float, float]]],
    latency_xlabel: str = "percentile",
    throughput_ylabel: str = "requests/s",
    target: float | None = None,
    right_title: str = "throughput vs concurrency",
    right_xlabel: str = "concurrent connections",
) -> Path:
    """Left: latency distribution (ms by percentile, one line per series). Right: throughput versus concurrency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=80)
    for label, points in latency.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        left.plot(xs, ys, marker=".", label=label)
    left.set_xlabel(latency_xlabel)
    left.set_ylabel("latency (ms)")
    left.set_title("latency distribution")
    left.grid(alpha=0.3)
    left.legend(fontsize=8)
    for label, points in throughput.items():
        xs, ys = zip(*points, strict=True) if points else ((), ())
        right.plot(xs, ys, marker="o", label=label)
    if target is not None:
        right.axhline(target, color="grey", linestyle="--", linewidth=1, label="target")
    right.set_xlabel(right_xlabel)
    right.set_ylabel(throughput_ylabel)
    right.set_title(right_title)
    right.grid(alpha=0.3)
    right.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path = RESULTS_DIR / f"{name}{'-quick' if quick else ''}.png"
    figure.savefig(path)
    plt.close(figure)
    return path


def cdf_points(values_ms: list[float]) -> list[tuple[float, float]]:
    """(percentile, ms) pairs for a chart from raw latencies."""
    ordered = sorted(values_ms)
    if not ordered:
        return []
    step = max(1, len(ordered) // 200)
    points = [((i + 1) / len(ordered) * 100, ordered[i]) for i in range(0, len(ordered), step)]
    points.append((100.0, ordered[-1]))
    return points
