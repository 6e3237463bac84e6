"""Instructions per cache hit, counted by callgrind: `python -m bench.instructions [--hits N]`.

Wall-clock timings of one hit moved by ±15 % between batches on these shared VMs, more than a change to the hot path
usually saves. valgrind's callgrind counts the instructions the interpreter executes instead, and those repeat from
run to run (within 1–2 % here), whatever else the machine is doing.

Each app, the service and the bare endpoint, runs in its own process under
`valgrind --tool=callgrind --instr-atstart=no`. That process builds the app as `--scenario profile` does (the
service with a real redis-server and the emulator, its request log written to /dev/null), warms it, then tells this
one it is ready; counting is switched on with `callgrind_control -i on` only around the N cache hits, and off before
the process tears the stack down. So start-up, key generation and shutdown are not in the count.

What it does not count: time in system calls and waiting for the GIL. The gunicorn workers' CPU per request under
wrk (scenario 1) is the measure that includes those. Writes bench/results/instructions.json.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import bare_app, report
from .profile_hot_path import call_wsgi, service_app_and_request
from .stack import Stack

APPS = ("service", "bare")
WARM_UP_HITS = 50
ROOT = Path(__file__).resolve().parents[1]


def count_instructions(app: str, hits: int, timeout: float = 900) -> int:
    """Instructions the interpreter executed for `hits` cache hits through `app` ("service" or "bare")."""
    for tool in ("valgrind", "callgrind_control"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} not found: apt-get install -y valgrind")
    with tempfile.TemporaryDirectory(prefix="bench-callgrind-") as control:
        command = [
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={control}/callgrind.out",
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            app,
            "--hits",
            str(hits),
            "--control-dir",
            control,
        ]
        # Its own process group: if anything goes wrong here, the measured process and the redis-server and emulator
        # it started go together, instead of being left running.
        child = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        try:
            _wait_for(control, "ready", deadline, child)
            _callgrind_control(child.pid, "on")  # valgrind runs the program in its own process: same pid
            _signal(control, "go")
            _wait_for(control, "done", deadline, child)
            _callgrind_control(child.pid, "off")
            _signal(control, "stop")
            _, stderr = child.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except BaseException as error:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            _, stderr = child.communicate()
            if isinstance(error, Exception):
                raise RuntimeError(f"callgrind run of {app} failed: {error}; valgrind said: {stderr[-500:]}") from error
            raise
    collected = re.search(r"Collected : (\d+)", stderr)
    if child.returncode != 0 or collected is None:
        raise RuntimeError(f"callgrind run of {app} failed ({child.returncode}): {stderr[-500:]}")
    return int(collected.group(1))


def _callgrind_control(pid: int, state: str) -> None:
    result = subprocess.run(["callgrind_control", "-i", state, str(pid)], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:  # e.g. vgdb cannot reach the process where ptrace is not allowed
        raise RuntimeError(f"callgrind_control -i {state} failed: {(result.stderr or result.stdout).strip()[-300:]}")


def _signal(control: str, name: str) -> None:
    Path(control, name).touch()


def _wait_for(control: str, name: str, deadline: float, child: subprocess.Popen | None = None) -> None:
    while not Path(control, name).exists():
        if child is not None and child.poll() is not None:
            raise RuntimeError(f"the measured process exited early ({child.returncode})")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no '{name}' from the measured process")
        time.sleep(0.05)


def _measured_process(app: str, hits: int, control: str) -> None:
    """Runs under valgrind: build and warm the app, then the hits between `go` and `done`."""
    deadline = time.monotonic() + 900
    with Stack(users=1) as stack, open(os.devnull, "w") as log_sink, contextlib.redirect_stdout(log_sink):
        service, template = service_app_and_request(stack)
        wsgi_app = service if app == "service" else bare_app.create_app()
        for _ in range(WARM_UP_HITS):
            status = call_wsgi(wsgi_app, template)
            if not status.startswith("302"):
                raise RuntimeError(f"warm-up answered {status}")
        _signal(control, "ready")
        _wait_for(control, "go", deadline)
        for _ in range(hits):
            call_wsgi(wsgi_app, template)
        _signal(control, "done")
        _wait_for(control, "stop", deadline)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=2000, help="cache hits counted per app (default 2000)")
    parser.add_argument("--runs", type=int, default=1, help="runs per app (default 1)")
    parser.add_argument("--child", choices=APPS, help=argparse.SUPPRESS)
    parser.add_argument("--control-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _measured_process(args.child, args.hits, args.control_dir)
        return 0
    per_hit = {app: [count_instructions(app, args.hits) / args.hits for _ in range(args.runs)] for app in APPS}
    ratio = min(per_hit["service"]) / min(per_hit["bare"])
    report.table(
        f"instructions per cache hit (callgrind, {args.hits} hits per run)",
        ["app", "instructions per hit"],
        [[app, " / ".join(f"{value:,.0f}" for value in values)] for app, values in per_hit.items()],
    )
    print(f"  service / bare: {ratio:.2f}", flush=True)
    report.write_json("instructions", {"hits": args.hits, "per_hit": per_hit, "ratio": round(ratio, 3)}, quick=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
