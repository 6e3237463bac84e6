"""Real-browser fixtures: Debian's Chromium driven by Playwright, and the service under gunicorn in demo mode.

One headless Chromium per test module (a fresh temporary profile, kept off the network by its flags), one fresh
browser context per test. The browser's popup blocker stays ON (Playwright normally turns it off), so a test that
gets a popup proves connect.js opens it the way a blocker allows. Screenshots of each step go to
artifacts/screenshots/<test>/ (git-ignored test artefacts).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.support.processes import PROJECT_ROOT, ServiceProcess

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = PROJECT_ROOT / "artifacts" / "screenshots"


@pytest.fixture(scope="module")
def browser() -> Browser:
    if not Path(CHROMIUM).exists():
        pytest.exit(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)", returncode=3)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            # Keep Chromium's real popup blocker working.
            ignore_default_args=["--disable-popup-blocking"],
        )
        yield browser
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.when == "call":
        item.call_failed = report.failed
    return report


@pytest.fixture
def context(request, browser, demo_service) -> BrowserContext:
    # Depends on demo_service so that it closes first: the service then stops without waiting for the browser's
    # keep-alive connections.
    context = browser.new_context(viewport={"width": 1000, "height": 760})
    context.set_default_timeout(20_000)
    yield context
    if getattr(request.node, "call_failed", False):
        _save_failure_screenshots(context, request.node.name)
    context.close()


def _save_failure_screenshots(context: BrowserContext, test_name: str) -> None:
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", test_name)
    folder.mkdir(parents=True, exist_ok=True)
    for number, open_page in enumerate(context.pages):
        try:
            open_page.screenshot(path=str(folder / f"failure-{number}.png"), full_page=True)
            (folder / f"failure-{number}.url.txt").write_text(open_page.url.split("?")[0] + "\n")
        except Exception:  # noqa: BLE001, S110 - diagnostics only; the test has already failed
            pass


@pytest.fixture
def page(context) -> Page:
    return context.new_page()


@pytest.fixture
def console_problems(context) -> list[str]:
    """Every console warning and error (and uncaught exception) of every page of this test's browser context, as
    `"<type>: <text> (<url>)"`: a happy path leaves it empty."""
    problems: list[str] = []

    def on_console(message) -> None:
        if message.type in ("warning", "error"):
            problems.append(f"{message.type}: {message.text} ({message.location.get('url', '')})")

    context.on("console", on_console)
    context.on("weberror", lambda error: problems.append(f"uncaught: {error.error}"))
    return problems


@pytest.fixture
def shot(request):
    """`shot(page, "01-demo")` saves a full-page PNG for this test."""
    folder = SCREENSHOTS / re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)

    def save(page: Page, step: str) -> Path:
        path = folder / f"{step}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return save


@pytest.fixture
def demo_service(settings_env):
    """Start the service in demo mode with its own /done as the Ayrshare `redirect`: `demo_service(**env)`.

    The port is picked before the start so the redirect can name it; `redirect_query` is appended to /done.
    """
    started: list[ServiceProcess] = []

    def start(redirect_query: str = "", **overrides: str) -> ServiceProcess:
        service = ServiceProcess({**settings_env, "DEMO_MODE": "1", **overrides}, workers=1)
        service.env.setdefault("AYRSHARE_REDIRECT", f"{service.url}/done{redirect_query}")
        started.append(service.start())
        return service

    yield start
    for service in started:
        service.stop()
