"""Run the Ayrshare emulator as a subprocess for tests and benchmarks.

    with EmulatorProcess("ACME", public_key_path, ["API-KEY"]) as emulator:
        service_env["AYRSHARE_BASE_URL"] = emulator.base_url
        emulator.set_knobs(fault="503", fault_count=2)

A real process (rather than an in-process app) means the code under test talks real HTTP, with real
connection handling, timeouts and dropped connections.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 15.0
CONTROL_TIMEOUT_SECONDS = 10.0
STOP_TIMEOUT_SECONDS = 5.0
LOG_TAIL_CHARS = 4000


class EmulatorStartError(RuntimeError):
    """The emulator did not become healthy in time; the message ends with its log tail."""


def _free_port() -> int:
    # Another process could take the port between here and the emulator's bind; start() retries once
    # the emulator exits early, which is how that race shows up.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorProcess:
    """One emulator subprocess on 127.0.0.1 with helpers for its `/_emulator/` control endpoints."""

    def __init__(
        self,
        domain: str,
        public_key_path: str | os.PathLike[str],
        api_keys: list[str] | tuple[str, ...],
        profiles: dict[str, str] | None = None,
        python: str = sys.executable,
        cwd: str | os.PathLike[str] = PROJECT_ROOT,
        link_base: str | None = None,
        verbose: bool = False,
        webhook_retry_delays: tuple[float, ...] | None = None,
        webhook_timeout: float | None = None,
    ) -> None:
        if not api_keys:
            raise ValueError("at least one API key is required")
        self.domain = domain
        self.public_key_path = Path(public_key_path)
        self.api_keys = list(api_keys)
        self.profiles = profiles
        self.python = python
        self.cwd = Path(cwd)
        self.link_base = link_base
        self.verbose = verbose
        self.webhook_retry_delays = webhook_retry_delays
        self.webhook_timeout = webhook_timeout
        self.port: int | None = None
        self._process: subprocess.Popen | None = None
        self._workdir: Path | None = None
        self._log_file = None

    # --- addresses -----------------------------------------------------------------------------------------
    @property
    def origin(self) -> str:
        return f"http://{self.link_host}"

    @property
    def base_url(self) -> str:
        """What the service uses as AYRSHARE_BASE_URL."""
        return f"{self.origin}/api"

    @property
    def link_host(self) -> str:
        if self.port is None:
            raise RuntimeError("emulator not started")
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path | None:
        return self._workdir / "emulator.log" if self._workdir else None

    # --- lifecycle -----------------------------------------------------------------------------------------
    def start(self, attempts: int = 3) -> EmulatorProcess:
        if self._process is not None:
            raise RuntimeError("emulator already started")
        self._workdir = Path(tempfile.mkdtemp(prefix="ayrshare-emulator-"))
        last_error: EmulatorStartError | None = None
        for _ in range(attempts):
            try:
                self._start_once()
                return self
            except EmulatorStartError as exc:
                last_error = exc
                exited_early = self._process is not None and self._process.poll() is not None
                self._terminate()
                if not exited_early:
                    break  # it ran but never became healthy: retrying on another port will not help
        self._cleanup_workdir()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        assert self._workdir is not None
        self.port = _free_port()
        command = [
            self.python,
            "-m",
            "emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--domain",
            self.domain,
            "--public-key-file",
            str(self.public_key_path),
        ]
        for api_key in self.api_keys:
            command += ["--api-key", api_key]
        if self.profiles is not None:
            profiles_path = self._workdir / "profiles.json"
            profiles_path.write_text(json.dumps(self.profiles), encoding="utf-8")
            command += ["--profiles-file", str(profiles_path)]
        if self.link_base:
            command += ["--link-base", self.link_base]
        if self.verbose:
            command.append("--verbose")
        if self.webhook_retry_delays is not None:
            command += ["--webhook-retry-delays", ",".join(str(delay) for delay in self.webhook_retry_delays)]
        if self.webhook_timeout is not None:
            command += ["--webhook-timeout", str(self.webhook_timeout)]

        self._log_file = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self._process = subprocess.Popen(
            command, cwd=self.cwd, stdout=self._log_file, stderr=subprocess.STDOUT, env=env
        )
        self._wait_until_healthy()

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmulatorStartError(f"emulator exited with code {self._process.returncode}:\n{self.log_tail()}")
            try:
                if requests.get(f"{self.origin}/_emulator/health", timeout=0.5).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.05)
        raise EmulatorStartError(f"emulator not healthy after {START_TIMEOUT_SECONDS:.0f} s:\n{self.log_tail()}")

    def log_tail(self) -> str:
        path = self.log_path
        if path is None or not path.exists():
            return "(no log)"
        return path.read_text(encoding="utf-8", errors="replace")[-LOG_TAIL_CHARS:]

    def stop(self) -> None:
        """Terminate the process and remove its temporary directory (log included)."""
        self._terminate()
        self._cleanup_workdir()

    def _terminate(self) -> None:
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(timeout=STOP_TIMEOUT_SECONDS)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _cleanup_workdir(self) -> None:
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> EmulatorProcess:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- control endpoints ---------------------------------------------------------------------------------
    def set_knobs(self, **knobs: object) -> dict:
        """Merge knobs (latency_ms, fault, fault_count, token_lifetime_seconds, rate_limit_max, webhook_*: see
        emulator/knobs.py)."""
        return self._control("post", "knobs", json=knobs)

    def knobs(self) -> dict:
        return self._control("get", "knobs")

    def reset(self) -> None:
        self._control("post", "reset")

    def stats(self) -> dict:
        return self._control("get", "stats")

    def calls(self) -> int:
        """Link-minting requests (generateJWT and Link Session creates) that reached the emulator, faulted ones
        included: the number of linking URLs asked for, whichever flow the service uses."""
        stats = self.stats()
        return stats["generate_calls"] + stats["link_session_calls"]

    def session_stats(self) -> dict:
        """Link Session requests that reached the emulator: `{"creates": n, "reads": n, "revokes": n}`."""
        stats = self.stats()
        return {
            "creates": stats["link_session_calls"],
            "reads": stats["link_session_reads"],
            "revokes": stats["link_session_revokes"],
        }

    def profile_stats(self) -> dict:
        """Profiles-endpoint requests that reached the emulator, faulted ones included:
        `{"creates": n, "deletes": n, "user_reads": n, "social_unlinks": n}`."""
        stats = self.stats()
        return {
            "creates": stats["profile_creates"],
            "deletes": stats["profile_deletes"],
            "user_reads": stats["user_reads"],
            "social_unlinks": stats["social_unlinks"],
        }

    def created_profiles(self) -> dict:
        """User Profiles created through the API and not deleted: `{"count": n, "profiles": [{title, refId,
        activeSocialAccounts}], "deleted": n}` (never their keys)."""
        return self._control("get", "profiles")

    def emails(self) -> list[dict]:
        """The Connect Accounts emails "sent", oldest first: to, contactEmail, company, termsUrl, privacyUrl, bcc (when
        given), profileKey, url (the linking URL the email carries) and sentAt."""
        return self._control("get", "emails")

    # --- webhooks ------------------------------------------------------------------------------------------------
    def register_webhook(
        self, url: str, action: str = "social", secret: str | None = None, profile_key: str | None = None
    ) -> dict:
        """Register a hook through the API (`POST /api/hook/webhook`, first API key) and return the answer; for a
        User Profile when `profile_key` is given, else for the Primary Profile."""
        body = {"action": action, "url": url} if secret is None else {"action": action, "url": url, "secret": secret}
        return self._api("post", "hook/webhook", body, profile_key)

    def unregister_webhook(self, action: str = "social", profile_key: str | None = None) -> dict:
        return self._api("delete", "hook/webhook", {"action": action}, profile_key)

    def rotate_webhook_secret(self, secret: str, profile_key: str | None = None) -> dict:
        """`POST /api/hook/webhook/secret`: the profile's new signing secret (the old one keeps signing for the grace
        window, knob `webhook_grace_seconds`)."""
        return self._api("post", "hook/webhook/secret", {"secret": secret}, profile_key)

    def webhooks(self) -> dict:
        """`{"registrations": [{profile, refId, title, action, url, created, secretSet, dualSigningUntil}],
        "attempts": [...]}`, never secrets or profile keys."""
        return self._control("get", "webhooks")

    def webhook_attempts(self) -> list[dict]:
        """Every delivery attempt, oldest first: deliveryId, attempt (1, 2, 3), action, type, platform, refId, url,
        statusCode (None when the connection failed; 503 on a timeout, as the vendor records it), error, ok, fault
        (the knob `webhook_fault` this attempt carried, else None), at."""
        return self.webhooks()["attempts"]

    def wait_for_webhook_attempts(self, count: int, timeout: float = CONTROL_TIMEOUT_SECONDS) -> list[dict]:
        """Poll until at least `count` attempts are recorded; return them, or raise AssertionError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            attempts = self.webhook_attempts()
            if len(attempts) >= count:
                return attempts
            if time.monotonic() >= deadline:
                raise AssertionError(f"expected {count} webhook attempts, got {len(attempts)}: {attempts}")
            time.sleep(0.05)

    def send_webhook(
        self, kind: str, platform: str, profile_key: str | None = None, ref_id: str | None = None, **fields: object
    ) -> dict:
        """Make the emulator send a `social` event of type `kind` (link, unlink or refresh) for `profile_key`, or for
        a bare `ref_id` through the Primary Profile's hook; `fields` override title, displayName, source, refreshBy,
        details. Returns `{deliveryId, url, event}`; raises RuntimeError when no hook would receive it (409)."""
        body: dict = {"type": kind, "platform": platform, **fields}
        if profile_key is not None:
            body["profileKey"] = profile_key
        if ref_id is not None:
            body["refId"] = ref_id
        return self._control("post", "webhooks/send", json=body)

    def _api(self, method: str, path: str, body: dict, profile_key: str | None) -> dict:
        headers = {"Authorization": f"Bearer {self.api_keys[0]}"}
        if profile_key is not None:
            headers["Profile-Key"] = profile_key
        response = requests.request(
            method, f"{self.base_url}/{path}", json=body, headers=headers, timeout=CONTROL_TIMEOUT_SECONDS
        )
        if not response.ok:
            raise RuntimeError(f"emulator {path}: HTTP {response.status_code}: {response.text}")
        return response.json()

    def _control(self, method: str, name: str, **kwargs: object) -> dict | list:
        response = requests.request(
            method, f"{self.origin}/_emulator/{name}", timeout=CONTROL_TIMEOUT_SECONDS, **kwargs
        )
        if not response.ok:
            raise RuntimeError(f"emulator {name}: HTTP {response.status_code}: {response.text}")
        return response.json()


def press(page: requests.Response, network: str, op: str) -> requests.Response:
    """Submit the page's Link/Unlink form for `network` the way a browser would (fields scraped from the HTML)."""
    html = page.text
    form = re.search(rf'<li id="network-{network}".*?<form method="post" action="([^"]+)">(.*?)</form>', html, re.S)
    assert form, f"no form for {network}"
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', form.group(2)))
    assert f'name="op" value="{op}"' in form.group(2)
    origin = f"{urlsplit(page.url).scheme}://{urlsplit(page.url).netloc}"
    return requests.post(f"{origin}{form.group(1)}", data={**fields, "op": op}, timeout=10)
