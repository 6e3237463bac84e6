"""The directory prometheus-client's multiprocess mode keeps every worker's values in, for `config/gunicorn.conf.py`.

Unset `PROMETHEUS_MULTIPROC_DIR`: a fresh directory in /dev/shm, locked (flock) by its master for as long as it or a
worker runs, removed at exit; a later start sweeps directories whose lock nobody holds (a master killed with -9).
Set: used as it is, its old files wiped at start. Nothing here imports prometheus-client, which must come after.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from pathlib import Path

PREFIX = "ayrshare-connect-metrics-"
OWNER_LOCK = ".owner.lock"
SWEEP_MIN_AGE_SECONDS = 60  # a directory this young may belong to a master that has not locked it yet


def prepare() -> tuple[Path, object | None]:
    """Set PROMETHEUS_MULTIPROC_DIR (making our own directory when unset): (the directory, our lock's open file)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
        directory.mkdir(parents=True, exist_ok=True)
        for stale in directory.glob("*.db"):  # a previous run's counters would otherwise be added to ours
            stale.unlink(missing_ok=True)
        return directory, None
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    parent = Path(shm or tempfile.gettempdir())
    _sweep_abandoned(parent)
    directory = Path(tempfile.mkdtemp(prefix=PREFIX, dir=parent))
    lock = open(directory / OWNER_LOCK, "w")  # noqa: SIM115 - kept open on purpose: the lock lives with it
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory, lock


def remove(directory: Path) -> None:
    """Remove the directory if `prepare` made it (nobody else reads it)."""
    if directory.name.startswith(PREFIX):
        shutil.rmtree(directory, ignore_errors=True)


def _sweep_abandoned(parent: Path) -> None:
    for candidate in parent.glob(PREFIX + "*"):
        try:
            if time.time() - candidate.stat().st_mtime < SWEEP_MIN_AGE_SECONDS:
                continue
            with open(candidate / OWNER_LOCK) as handle:  # no lock file: not made by this module, left alone
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # locked by a live owner (BlockingIOError), or gone meanwhile
            continue
        shutil.rmtree(candidate, ignore_errors=True)
