"""`make run`: start the service locally, and say first which mode it runs in and why.

With an Ayrshare API key or domain in the environment or the settings file (`ENV_FILE`, else `.env`), it runs the
service as the container does (bin/boot: migrations, then gunicorn with the production config) with those settings,
on 127.0.0.1:$PORT unless BIND is set. With neither, it starts a complete demo that needs nothing: a fresh RSA key,
the project's Ayrshare emulator, an in-process cache and `CONNECT_AUTH=none`, then prints the URL to open.

`--signed` (`make run SIGNED=1`): the demo with `CONNECT_AUTH=signed` and a throwaway signing secret, so its page
renders signed links as a backend would, and can show the expired-link and wrong-user pages.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import requests

from service.config import ConfigError
from service.config.settings import read_settings_file

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / ".demo"
# Any of these, set in the environment or the settings file, means "your settings": an Ayrshare account's identity.
DECIDING = ("AYRSHARE_API_KEY", "AYRSHARE_API_KEY_FILE", "AYRSHARE_DOMAIN")
EMULATOR_PORT = int(os.environ.get("EMULATOR_PORT", "8001"))


def settings_file(environ: Mapping[str, str]) -> Path:
    """`ENV_FILE`, else `.env`, relative to the project (where bin/boot and gunicorn run), as the service reads it."""
    return ROOT / (environ.get("ENV_FILE") or ".env")


def read_file(path: Path) -> dict[str, str]:
    """The file's non-empty settings, read as the service reads them; an unreadable file stops here, as it would."""
    try:
        return {name: value for name, value in read_settings_file(path).items() if value}
    except ConfigError as error:
        sys.stderr.write(f"make run: configuration error: {error}\n")
        raise SystemExit(2) from None


def choose_mode(environ: Mapping[str, str], path: Path) -> tuple[bool, str]:
    """(demo?, why): the settings that decided, and where they were found."""
    in_env = [name for name in DECIDING if environ.get(name)]
    if in_env:
        return False, f"{in_env[0]} is set in the environment"
    in_file = [name for name in DECIDING if read_file(path).get(name)]
    if in_file:
        return False, f"{in_file[0]} is set in {path}"
    if not path.is_file():
        what = f"{path} is not a settings file" if path.exists() else f"no {path}"  # ENV_FILE=/dev/null, say
        return True, f"{what}, and no AYRSHARE_API_KEY or AYRSHARE_DOMAIN in the environment"
    return True, f"neither {path} nor the environment sets AYRSHARE_API_KEY or AYRSHARE_DOMAIN; {path} is not used"


def _port(environ: Mapping[str, str], path: Path) -> int:
    return int(environ.get("PORT") or read_file(path).get("PORT") or "8000")


PORT = _port(os.environ, settings_file(os.environ))


def gunicorn(env: dict[str, str], workers: int) -> list[str]:
    return [
        str(Path(sys.executable).parent / "gunicorn"),
        "-c",
        "config/gunicorn.conf.py",
        "--bind",
        f"127.0.0.1:{PORT}",
        "--workers",
        str(workers),
        "service:create_app()",
    ]


def run_demo(signed: bool = False) -> int:
    # The same key pair and profile files the compose demo uses (bin/demo-setup), kept in .demo/.
    subprocess.run([sys.executable, str(ROOT / "bin" / "demo-setup"), str(DEMO)], check=True)
    private = DEMO / "private.pem"
    demo_users = json.loads((DEMO / "profiles.json").read_text())
    api_key = "demo-api-key"
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(EMULATOR_PORT),
            "--domain",
            "DEMO",
            "--public-key-file",
            str(DEMO / "public.pem"),
            "--api-key",
            api_key,
            "--profiles-file",
            str(DEMO / "emulator-profiles.json"),
        ],
        cwd=ROOT,
    )
    env = {
        **os.environ,
        "ENV_FILE": "/nonexistent/.env",
        "DEMO_MODE": "1",
        "CONNECT_AUTH": "none",
        "AYRSHARE_API_KEY": api_key,
        "AYRSHARE_PRIVATE_KEY_FILE": str(private),
        "AYRSHARE_DOMAIN": "DEMO",
        "AYRSHARE_BASE_URL": f"http://127.0.0.1:{EMULATOR_PORT}/api",
        "LINK_ALLOWED_HOSTS": f"http://127.0.0.1:{EMULATOR_PORT}",
        "PROFILE_KEYS_FILE": str(DEMO / "profiles.json"),
        # The directory: a SQLite file in .demo/, and profiles made on first click for users not in the file.
        "DATA_DIR": str(DEMO),
        "PROFILE_AUTO_CREATE": "true",
        "AYRSHARE_REDIRECT": f"http://127.0.0.1:{PORT}/done",
        # The demo listens on loopback only: /metrics beside it, rather than a second port that may be taken.
        "METRICS_BIND": "main",
    }
    if signed:
        # A fresh secret each run: the links the demo page renders are the only ones that exist.
        env.update(CONNECT_AUTH="signed", CONNECT_SIGNING_SECRET=secrets.token_hex(32))
    subprocess.run(
        [str(Path(sys.executable).parent / "flask"), "--app", "service", "db", "upgrade"], env=env, check=True
    )
    env.pop("REDIS_URL", None)
    service = subprocess.Popen(gunicorn(env, workers=1), cwd=ROOT, env=env)
    try:
        _wait_for(f"http://127.0.0.1:{PORT}/healthz")
        if signed:
            more = (
                f"    links are signed (CONNECT_AUTH=signed, a secret made for this run); the page's last choices\n"
                f"    show the expired-link and wrong-user pages, and http://127.0.0.1:{PORT}/demo?link_ttl=5 makes\n"
                f"    links that expire 5 seconds after the page loads\n"
            )
        else:
            more = f"    or   http://127.0.0.1:{PORT}/connect/ada  (users: {', '.join(demo_users)})\n"
        print(
            f"\n  ayrshare-connect demo is running (no credentials, emulated Ayrshare):\n"
            f"    open http://127.0.0.1:{PORT}/demo\n{more}"
            f"  Ctrl-C stops it.\n",
            flush=True,
        )
        return service.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (service, emulator):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)


def _wait_for(url: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=1).ok:
                return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"the service did not come up at {url}; see the output above")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Start the service locally: the demo, or your settings.")
    parser.add_argument(
        "--signed", action="store_true", help="the demo with signed links (CONNECT_AUTH=signed, a throwaway secret)"
    )
    args = parser.parse_args(argv)
    path = settings_file(os.environ)
    demo, why = choose_mode(os.environ, path)
    mode = ("the demo with signed links" if args.signed else "the demo") if demo else "your settings"
    print(f"make run: {mode} ({why})", flush=True)
    if demo:
        return run_demo(signed=args.signed)
    if args.signed:
        print("make run: --signed only changes the demo; your settings decide CONNECT_AUTH", flush=True)
    os.chdir(ROOT)
    # Loopback unless BIND says otherwise: PORT alone would make the service listen on every interface.
    if not (os.environ.get("BIND") or read_file(path).get("BIND")):
        os.environ["BIND"] = f"127.0.0.1:{PORT}"
    # bin/boot, as in the container: the directory's migrations (DATABASE_MIGRATE_ON_START), then gunicorn, which
    # take every other setting (GUNICORN_WORKERS, ...) from the environment and the settings file themselves.
    boot = str(ROOT / "bin" / "boot")
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.execv(boot, [boot])


if __name__ == "__main__":
    sys.exit(main())
