"""`.env` (or `ENV_FILE`) is read the same way by `make run`, the Flask CLI and gunicorn: the process environment
wins, and only that one file counts."""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.conftest import API_KEY, DATA_KEY, SIGNING_SECRET
from tests.support.processes import PROJECT_ROOT, ServiceProcess, free_port, wait_until, without_root_privileges

BIN = Path(sys.executable).parent


def _write_env(path: Path, settings: dict[str, str]) -> Path:
    path.write_text("".join(f"{name}='{value}'\n" for name, value in settings.items()))
    return path


@pytest.fixture
def minimal(profiles_file, tmp_path) -> dict[str, str]:
    return {
        "AYRSHARE_API_KEY": API_KEY,
        "AYRSHARE_DOMAIN": "ACME",
        "PROFILE_KEYS_FILE": str(profiles_file),
        "CONNECT_SIGNING_SECRET": SIGNING_SECRET,
        "DATA_ENCRYPTION_KEY": DATA_KEY,
        "DATA_DIR": str(tmp_path / "data"),
    }


def _flask(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(cwd)}
    return subprocess.run(
        [str(BIN / "flask"), "--app", "service", *args],
        cwd=cwd,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_flask_cli_reads_env_file_instead_of_the_dotenv_in_the_working_directory(minimal, tmp_path):
    """Flask's CLI copies ./.env into the environment itself; ENV_FILE must still decide, as under gunicorn."""
    work = tmp_path / "work"
    work.mkdir()
    _write_env(work / ".env", {**minimal, "GUNICORN_THREADS": "0"})  # would stop the start if it were read
    chosen = _write_env(tmp_path / "chosen.env", minimal)
    result = _flask(["sign-url", "alice"], work, {"ENV_FILE": str(chosen)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("/connect/alice?")


def test_the_flask_cli_ignores_a_dotenv_in_a_parent_directory_as_gunicorn_does(minimal, tmp_path):
    _write_env(tmp_path / ".env", {"GUNICORN_THREADS": "0"})  # Flask's own search walks up to here
    work = tmp_path / "work"
    work.mkdir()
    result = _flask(["sign-url", "alice"], work, minimal)
    assert result.returncode == 0, result.stderr


def test_the_flask_cli_reads_the_dotenv_in_the_working_directory_and_the_environment_wins(minimal, tmp_path):
    _write_env(tmp_path / ".env", {**minimal, "CONNECT_SIGNING_SECRET": "too-short"})
    assert _flask(["sign-url", "alice"], tmp_path, {}).returncode == 2  # .env is read...
    result = _flask(["sign-url", "alice"], tmp_path, {"CONNECT_SIGNING_SECRET": SIGNING_SECRET})
    assert result.returncode == 0, result.stderr  # ...and the process environment wins over it


def test_an_empty_variable_in_the_environment_lets_the_dotenv_fill_it_in(minimal, tmp_path):
    """Empty counts as unset: `-e AYRSHARE_API_KEY=$UNSET_VAR` must not hide the file's key."""
    _write_env(tmp_path / ".env", minimal)
    result = _flask(["sign-url", "alice"], tmp_path, {"AYRSHARE_API_KEY": "", "CONNECT_SIGNING_SECRET": ""})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("/connect/alice?")


@pytest.mark.parametrize("problem", ["PermissionError", "UnicodeDecodeError"])
def test_an_unreadable_settings_file_stops_every_entry_point_with_one_line(minimal, tmp_path, problem):
    """A `.env` mounted with mode 0600 for another user (the image runs as uid 10001), or saved in Latin-1, used to
    end in a traceback."""
    env_file = _write_env(tmp_path / "settings.env", minimal)
    if problem == "PermissionError":
        env_file.chmod(0o000)
    else:
        env_file.write_bytes(env_file.read_bytes() + b"AYRSHARE_DOMAIN=Caf\xe9\n")
    gunicorn = [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "--bind", f"127.0.0.1:{free_port()}"]
    entry_points = {
        "flask": [str(BIN / "flask"), "--app", "service", "check-config", "--offline"],
        "gunicorn": [*gunicorn, "service:create_app()"],
        "make run": [sys.executable, "scripts/run_local.py"],
    }
    for name, command in entry_points.items():
        result = subprocess.run(
            [*without_root_privileges(), *command],
            cwd=PROJECT_ROOT,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "ENV_FILE": str(env_file)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2, (name, result.stderr)
        assert result.stderr.endswith(f"configuration error: ENV_FILE: cannot read the settings file ({problem})\n")
        assert result.stderr.count("\n") == 1 and result.stdout == "", (name, result.stderr)


def test_gunicorn_takes_the_gevent_worker_class_from_the_settings_file_before_anything_imports_ssl(
    settings_env, tmp_path
):
    """The worker class is the one setting gunicorn.conf.py needs before the settings load (gevent patches first)."""
    env_file = _write_env(tmp_path / "settings.env", {**settings_env, "GUNICORN_WORKER_CLASS": "gevent"})
    service = ServiceProcess({"ENV_FILE": str(env_file)}, workers=1).start()
    try:
        assert requests.get(service.url + "/healthz", timeout=5).ok
        log = service.log()
        assert "Using worker: gevent" in log and "MonkeyPatchWarning" not in log, log
    finally:
        service.stop()
        service.remove_log()


def _run_local(env: dict[str, str], timeout: float = 90) -> tuple[subprocess.Popen, Path]:
    log = Path(env["DATA_DIR"]).parent / "make-run.log"
    base = {name: os.environ[name] for name in ("PATH", "HOME", "LANG") if name in os.environ}
    proc = subprocess.Popen(
        [sys.executable, "scripts/run_local.py"],
        cwd=PROJECT_ROOT,
        env={**base, "PYTHONUNBUFFERED": "1", **env},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, log


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(40)


def test_make_run_uses_a_dotenv_made_from_the_example_and_says_so(minimal, tmp_path):
    """A copy of .env.example with the domain and keys filled in (the API key left to compose's secret file) used to
    start the demo without a word; now it runs with those settings, and the missing API key stops it by name."""
    example = (PROJECT_ROOT / ".env.example").read_text()
    for name in ("AYRSHARE_DOMAIN", "DATA_ENCRYPTION_KEY", "CONNECT_SIGNING_SECRET"):
        example = example.replace(f"\n{name}=\n", f"\n{name}={minimal[name]}\n")
    env_file = tmp_path / "filled.env"
    env_file.write_text(example)
    proc, log = _run_local({"ENV_FILE": str(env_file), "DATA_DIR": minimal["DATA_DIR"], "PORT": str(free_port())})
    try:
        assert proc.wait(60) == 2
    finally:
        _stop(proc)
    output = log.read_text()
    assert f"make run: your settings (AYRSHARE_DOMAIN is set in {env_file})" in output, output
    assert "configuration error: AYRSHARE_API_KEY: is required but not set" in output
    assert "demo" not in output.split("make run:")[0]


def test_make_run_serves_your_settings_from_the_file_on_loopback(settings_env, tmp_path):
    port = free_port()
    env_file = _write_env(tmp_path / "real.env", {**settings_env, "DATA_DIR": str(tmp_path / "data")})
    proc, log = _run_local({"ENV_FILE": str(env_file), "DATA_DIR": str(tmp_path / "data"), "PORT": str(port)})
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, 40, what="make run")
    finally:
        _stop(proc)
    assert f"make run: your settings (AYRSHARE_API_KEY is set in {env_file}" in log.read_text()


def _mode_module():
    spec = importlib.util.spec_from_file_location("run_local", PROJECT_ROOT / "scripts" / "run_local.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_run_explains_why_it_runs_the_demo(tmp_path):
    run_local = _mode_module()
    missing = tmp_path / "missing.env"
    demo, why = run_local.choose_mode({}, missing)
    assert demo and why == f"no {missing}, and no AYRSHARE_API_KEY or AYRSHARE_DOMAIN in the environment"
    untouched = tmp_path / "copy.env"
    untouched.write_text((PROJECT_ROOT / ".env.example").read_text())
    demo, why = run_local.choose_mode({}, untouched)
    assert demo and why == (
        f"neither {untouched} nor the environment sets AYRSHARE_API_KEY or AYRSHARE_DOMAIN; {untouched} is not used"
    )
    demo, why = run_local.choose_mode({}, Path("/dev/null"))  # docs/development.md: the demo beside a real .env
    assert demo and why.startswith("/dev/null is not a settings file, and no AYRSHARE_API_KEY")
    demo, why = run_local.choose_mode({"AYRSHARE_API_KEY_FILE": "/run/secrets/key"}, missing)
    assert not demo and why == "AYRSHARE_API_KEY_FILE is set in the environment"
