"""The metrics directory config/gunicorn.conf.py makes when PROMETHEUS_MULTIPROC_DIR is unset: its owner lock, and the
sweep at start that removes directories a killed master left behind (and nothing else)."""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from tests.support.processes import wait_until

PREFIX = "ayrshare-connect-metrics-"
OWNER_LOCK = ".owner.lock"
AN_HOUR_AGO = time.time() - 3600


def metrics_parent() -> Path:
    """Where the config file makes its directories: /dev/shm when writable, else the temp directory."""
    shm = Path("/dev/shm")
    return shm if shm.is_dir() and os.access(shm, os.W_OK) else Path(tempfile.gettempdir())


def ours() -> set[Path]:
    return set(metrics_parent().glob(PREFIX + "*"))


def lock_is_free(directory: Path) -> bool:
    with open(directory / OWNER_LOCK) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True


def make_dir(kind: str, lock_file: bool = True, old: bool = True) -> Path:
    directory = metrics_parent() / f"{PREFIX}test-{kind}-{uuid.uuid4().hex[:8]}"
    directory.mkdir()
    (directory / "counter_1234.db").write_bytes(b"\0" * 16)
    if lock_file:
        (directory / OWNER_LOCK).touch()
    if old:
        os.utime(directory, (AN_HOUR_AGO, AN_HOUR_AGO))
    return directory


@pytest.fixture
def planted():
    made: list[Path] = []
    yield made
    for directory in made:
        shutil.rmtree(directory, ignore_errors=True)


def test_a_start_removes_only_directories_whose_owner_is_gone(start_service, planted):
    abandoned = make_dir("abandoned")
    live = make_dir("live")
    legacy = make_dir("legacy", lock_file=False)  # made before owner locks: nobody can tell, so it stays
    young = make_dir("young", old=False)  # may be a master between making its directory and locking it
    planted.extend([abandoned, live, legacy, young])
    with open(live / OWNER_LOCK) as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # this test process stands in for a running master

        start_service(workers=1)

        assert not abandoned.exists()
        assert live.exists() and legacy.exists() and young.exists()


def test_a_killed_masters_directory_is_swept_by_the_next_start(start_service, planted):
    before = ours()
    service = start_service(workers=2)
    (directory,) = ours() - before
    planted.append(directory)
    assert not lock_is_free(directory), "a running service holds its directory's owner lock"

    # No exit hook runs: the directory stays, but its lock goes with the last of the processes that held it.
    os.killpg(service.proc.pid, signal.SIGKILL)
    service.proc.wait(10)
    assert directory.exists()
    wait_until(lambda: lock_is_free(directory), 10, what="the workers to be gone too")
    os.utime(directory, (AN_HOUR_AGO, AN_HOUR_AGO))

    start_service(workers=1)

    assert not directory.exists()


def test_a_directory_set_in_the_environment_is_never_swept_or_locked(start_service, tmp_path, planted):
    abandoned = make_dir("abandoned")
    planted.append(abandoned)
    chosen = tmp_path / "prom"
    chosen.mkdir()

    start_service(workers=1, PROMETHEUS_MULTIPROC_DIR=str(chosen))

    # The operator picked the directory: no lock file in it, and no sweeping of anyone else's.
    assert not (chosen / OWNER_LOCK).exists()
    assert abandoned.exists()


def test_a_start_refused_for_its_configuration_leaves_no_directory_behind(start_service):
    """gunicorn runs no exit hook when a start hook exits, so the refusal removes the directory itself."""
    before = ours()
    service = start_service(wait=False, AYRSHARE_API_KEY="")
    assert service.proc.wait(30) == 2
    assert "configuration error: AYRSHARE_API_KEY" in service.log()
    assert ours() == before
