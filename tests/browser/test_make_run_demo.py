"""`make run` (scripts/run_local.py) with no credentials: it prints the /demo URL, and that demo works in a browser;
`make run SIGNED=1` (`--signed`) renders signed links and shows the expired-link and wrong-user pages."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import pytest
from playwright.sync_api import expect

from tests.browser.popups import click_and_wait_for_close
from tests.support.processes import PROJECT_ROOT, free_port

pytestmark = pytest.mark.browser


class RunLocal:
    """scripts/run_local.py on free ports, its output collected by a thread (so the pipe never fills up)."""

    def __init__(self, *args: str) -> None:
        self.port, self.emulator_port = free_port(), free_port()
        env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
        env.update(PORT=str(self.port), EMULATOR_PORT=str(self.emulator_port), PYTHONUNBUFFERED="1")
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "scripts/run_local.py", *args],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def wait_for_line(self, pattern: str, timeout: float = 40) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if re.search(pattern, line):
                    return line
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"run_local.py never printed {pattern!r}:\n{''.join(self.lines[-40:])}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # what Ctrl-C does
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)


def test_make_run_prints_the_demo_url_and_the_demo_links_a_user(page, shot, console_problems):
    if (PROJECT_ROOT / ".env").is_file():
        raise AssertionError("a .env file makes `make run` use real settings; move it away to run this test")
    run = RunLocal()
    try:
        demo_url = f"http://127.0.0.1:{run.port}/demo"
        run.wait_for_line(re.escape(f"open {demo_url}"))

        page.goto(demo_url)
        assert page.get_attribute("#link-mode", "data-mode") == "open"  # CONNECT_AUTH=none in the demo
        page.select_option("#user", "grace")
        shot(page, "01-make-run-demo")
        with page.expect_popup() as popup_info:
            page.click("#connect")
        popup = popup_info.value
        expect(popup.locator("#profile-key")).to_have_text("DEMO-PROFILE-GRACE")
        shot(popup, "02-make-run-linking-page")
        with popup.expect_event("close"):
            popup.click("#done")
        expect(page.locator("#status")).to_have_attribute("data-state", "linked")
        shot(page, "03-make-run-linked")
        assert console_problems == []
    finally:
        run.stop()
    assert run.proc.returncode == 0


def test_make_run_signed_renders_signed_links_and_shows_the_pages_of_links_that_fail(page, shot):
    if (PROJECT_ROOT / ".env").is_file():
        raise AssertionError("a .env file makes `make run` use real settings; move it away to run this test")
    run = RunLocal("--signed")
    try:
        run.wait_for_line(r"^make run: the demo with signed links \(")
        demo_url = f"http://127.0.0.1:{run.port}/demo"
        run.wait_for_line(re.escape(f"open {demo_url}"))
        page.goto(demo_url)
        assert page.get_attribute("#link-mode", "data-mode") == "signed"
        assert "signature=" in page.get_attribute("#user option[value='grace']", "data-url")

        failing = page.locator("#user optgroup option")
        expired, wrong_user = failing.nth(0).get_attribute("value"), failing.nth(1).get_attribute("value")
        assert expired.startswith("expired:") and wrong_user.startswith("wrong-user:")
        for value, code, sentence in (
            (expired, "link_expired", "This link has expired."),
            (wrong_user, "bad_signature", "This link was made for another user"),
        ):
            page.select_option("#user", value)
            with page.expect_popup() as popup_info:
                page.click("#connect")
            popup = popup_info.value
            expect(popup.get_by_role("heading", level=1)).to_have_text("This link cannot be used")
            expect(popup.get_by_role("alert")).to_contain_text(sentence)
            expect(popup.locator("#error-code")).to_have_text(code)
            shot(popup, f"0{1 if code == 'link_expired' else 2}-make-run-signed-{code}")
            expect(page.locator("#status")).to_have_attribute("data-code", code)
            click_and_wait_for_close(popup, popup.get_by_role("button", name="Close this window"))

        page.select_option("#user", "grace")  # and a good signed link still links
        with page.expect_popup() as popup_info:
            page.click("#connect")
        popup = popup_info.value
        expect(popup.locator("#profile-key")).to_have_text("DEMO-PROFILE-GRACE")
        with popup.expect_event("close"):
            popup.click("#done")
        expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    finally:
        run.stop()
    assert run.proc.returncode == 0
