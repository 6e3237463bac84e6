"""connect.js on a frontend that lives on another origin than the service, as in production.

A tiny page server stands in for the team's app. It imports connect.js straight from the service (which allows
that with CORS) and is reachable under two origins: http://127.0.0.1:<port>, listed in FRONTEND_ORIGINS, and
http://localhost:<port>, not listed. Both sides of the postMessage check are exercised: the done page only reports
to listed origins, and connect.js only believes a message from the popup, from the service's origin.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Page, expect

from service.auth import signed_path
from tests.conftest import INTERNAL_TOKEN, PROFILES, SIGNING_SECRET
from tests.support.processes import free_port

pytestmark = pytest.mark.browser

APP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Team app</title><link rel="icon" href="data:,"></head>
<body>
<button id="connect" type="button">Connect</button>
<p id="status" data-state="idle">idle</p>
<p id="networks"></p>
<script type="module">
  import { connectSocialAccounts } from "__SERVICE__/static/connect.js";
  const config = __CONFIG__;
  const status = document.getElementById("status");
  const show = (state) => { status.dataset.state = state; status.textContent = state; };
  document.getElementById("connect").addEventListener("click", () => {
    show("waiting");
    connectSocialAccounts(config).then(
      (result) => {
        if ("networks" in result) document.getElementById("networks").textContent = JSON.stringify(result.networks);
        show(result.status);
      },
      (error) => show("error:" + error.code),
    );
  });
</script>
</body></html>
"""


class AppServer:
    """Serves APP_PAGE at /<name> for each registered config."""

    def __init__(self) -> None:
        self.pages: dict[str, bytes] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                body = pages.get(self.path)
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(body or b"not found")

            def log_message(self, *args) -> None:
                pass

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def add(self, name: str, service_url: str, config: dict) -> None:
        html = APP_PAGE.replace("__SERVICE__", service_url).replace("__CONFIG__", json.dumps(config))
        self.pages[f"/{name}"] = html.encode()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def app_server():
    server = AppServer()
    yield server
    server.stop()


def click_connect(page: Page) -> Page:
    with page.expect_popup() as popup_info:
        page.click("#connect")
    return popup_info.value


def test_listed_origin_is_notified_and_forged_messages_are_ignored(page, app_server, demo_service, emulator, shot):
    listed = f"http://127.0.0.1:{app_server.port}"
    service = demo_service(FRONTEND_ORIGINS=listed)
    app_server.add("signed", service.url, {"url": service.url + signed_path("alice", SIGNING_SECRET, 300)})
    page.goto(f"{listed}/signed")

    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["alice"])
    # A "done" from the wrong window and origin (the app page itself) is not believed.
    page.evaluate("window.postMessage({type: 'ayrshare-connect', event: 'done'}, '*')")
    page.wait_for_timeout(300)
    expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
    shot(popup, "01-linking-page-for-cross-origin-app")

    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    # Not in CORS_ALLOWED_ORIGINS: the app may not read the networks, and "linked" stands without them.
    expect(page.locator("#networks")).to_have_text("null")
    shot(page, "02-cross-origin-app-linked")


def test_unlisted_origin_is_never_told_linked(page, app_server, demo_service, emulator):
    service = demo_service(FRONTEND_ORIGINS=f"http://127.0.0.1:{app_server.port}")
    app_server.add("signed", service.url, {"url": service.url + signed_path("bob", SIGNING_SECRET, 300)})
    page.goto(f"http://localhost:{app_server.port}/signed")  # same page, an origin the service does not know

    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["bob"])
    with popup.expect_event("close"):
        popup.click("#done")

    # The done page posted only to listed origins; the app sees the popup close without "done".
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")


def test_bearer_caller_gets_the_linking_url_as_json_and_the_popup_follows(page, app_server, demo_service, emulator):
    origin = f"http://127.0.0.1:{app_server.port}"
    # Stands in for a frontend that sends its session JWT: any bearer the service accepts takes the same path.
    service = demo_service(FRONTEND_ORIGINS=origin, CORS_ALLOWED_ORIGINS=origin)
    config = {
        "url": f"{service.url}/connect/carol@example.com",
        "headers": {"Authorization": f"Bearer {INTERNAL_TOKEN}"},
    }
    app_server.add("bearer", service.url, config)
    page.goto(f"{origin}/bearer")

    popup = click_connect(page)  # opened on about:blank inside the click, then sent to the URL from the JSON answer
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["carol@example.com"])
    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    assert emulator.calls() == 1


def link_network(popup: Page, network: str) -> None:
    popup.click(f"#link-{network}")
    expect(popup.locator(f"#network-{network}")).to_have_attribute("data-linked", "true")


def test_a_signed_link_caller_on_a_cors_listed_origin_gets_the_networks(
    page, app_server, demo_service, emulator, console_problems
):
    origin = f"http://127.0.0.1:{app_server.port}"
    service = demo_service(FRONTEND_ORIGINS=origin, CORS_ALLOWED_ORIGINS=origin)
    app_server.add("signed", service.url, {"url": service.url + signed_path("alice", SIGNING_SECRET, 300)})
    page.goto(f"{origin}/signed")

    popup = click_connect(page)
    link_network(popup, "twitter")
    link_network(popup, "linkedin")
    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#networks")).to_have_text('["linkedin","twitter"]')
    # The done page posted only to the origin the opener is on: no target-origin warning for the service's own.
    assert console_problems == []


def test_a_bearer_caller_gets_the_networks_with_its_own_headers(page, app_server, demo_service, emulator):
    origin = f"http://127.0.0.1:{app_server.port}"
    service = demo_service(FRONTEND_ORIGINS=origin, CORS_ALLOWED_ORIGINS=origin)
    config = {
        "url": f"{service.url}/connect/carol@example.com",
        "headers": {"Authorization": f"Bearer {INTERNAL_TOKEN}"},
    }
    app_server.add("bearer", service.url, config)
    reads: list[dict] = []
    page.on("request", lambda r: reads.append({"url": r.url, **r.headers}) if "/accounts" in r.url else None)
    page.goto(f"{origin}/bearer")

    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["carol@example.com"])
    link_network(popup, "youtube")
    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#networks")).to_have_text('["youtube"]')
    # Asked for at the service with the caller's bearer token (so after a CORS preflight the service answered).
    (read,) = [r for r in reads if r.get("authorization")]
    assert read["url"] == f"{service.url}/connect/carol@example.com/accounts"
    assert read["authorization"] == f"Bearer {INTERNAL_TOKEN}"
