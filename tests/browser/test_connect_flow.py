"""A person clicks "Connect" in real headless Chromium: demo page → service → emulator linking page → Done → back.

Everything is real: the service under gunicorn (signed links, Redis cache), the emulator's linking page, Chromium's
own popup blocker, postMessage between the windows. Each step is saved as a screenshot under artifacts/screenshots/.
"""

from __future__ import annotations

import re
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Page, expect

from tests.browser.popups import click_and_wait_for_close
from tests.conftest import API_KEY, LINK_FLOWS, PROFILES, SIGNING_SECRET

pytestmark = pytest.mark.browser


def open_demo(page: Page, service, user: str, query: str = "") -> None:
    page.goto(f"{service.url}/demo{query}")
    page.select_option("#user", user)
    expect(page.locator("#status")).to_have_attribute("data-state", "idle")


def click_connect(page: Page) -> Page:
    with page.expect_popup() as popup_info:
        page.click("#connect")
    return popup_info.value


def visited(popup: Page) -> list[str]:
    urls: list[str] = []
    popup.on("framenavigated", lambda frame: urls.append(frame.url) if frame == popup.main_frame else None)
    return urls


@pytest.mark.parametrize("link_flow", LINK_FLOWS)  # the other tests run in the default, session
def test_click_opens_linking_popup_and_done_closes_it_and_notifies_the_opener(
    page, context, demo_service, emulator, shot, link_flow, console_problems
):
    service = demo_service()
    open_demo(page, service, "alice")
    assert page.get_attribute("#link-mode", "data-mode") == "signed"
    shot(page, "01-demo-page")

    popup = click_connect(page)  # Chromium's popup blocker is on: the popup opened inside the click handler
    urls = visited(popup)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["alice"])
    assert popup.url.startswith(emulator.origin + "/")
    assert ("session=ayr_ls_" in popup.url) == (link_flow == "session")
    expect(page.locator("#status")).to_have_attribute("data-state", "waiting")
    shot(popup, "02-linking-page-in-popup")

    with popup.expect_event("close"):  # "Done" → the service's /done page, which notifies and closes
        popup.click("#done")

    assert popup.is_closed()
    assert any(url.startswith(f"{service.url}/done") for url in urls), urls
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#status")).to_contain_text("alice")
    assert page.url == f"{service.url}/demo"  # notified in place, not navigated
    shot(page, "03-demo-page-linked")
    assert emulator.calls() == 1

    # The done page on its own (no opener, no return URL): it says so and stays put.
    page.goto(f"{service.url}/done?return=")
    expect(page.get_by_role("heading", level=1)).to_have_text("Your social accounts are linked")
    expect(page.get_by_role("status")).to_contain_text("close this window")
    assert page.url == f"{service.url}/done?return="
    shot(page, "04-done-page-without-opener")
    # Not a warning or error on any page, the popup's included: no CSP violation under the strict policy
    # (script-src/style-src 'self'), no postMessage to an origin the opener is not on, no missing favicon.
    assert console_problems == []


def test_blocked_popup_falls_back_to_the_same_tab_and_comes_back_linked(page, context, demo_service, emulator, shot):
    service = demo_service()
    page.goto(f"{service.url}/demo")
    popups: list[Page] = []
    context.on("page", lambda new_page: popups.append(new_page))

    # Pick the user and click from a script with no user activation (Playwright's own input and evaluate calls
    # would grant one): Chromium's real popup blocker then refuses window.open, as it does for a late call.
    cdp = context.new_cdp_session(page)
    script = "document.getElementById('user').value = 'bob'; document.getElementById('connect').click()"
    with page.expect_navigation(url=f"{emulator.origin}/**"):
        cdp.send("Runtime.evaluate", {"expression": script, "userGesture": False})

    expect(page.locator("#profile-key")).to_have_text(PROFILES["bob"])
    shot(page, "01-linking-page-in-same-tab")
    page.click("#done")

    page.wait_for_url(f"{service.url}/demo**")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#status")).to_contain_text("bob")
    assert urlsplit(page.url).fragment == ""  # resumeSameTab() tidied the address bar
    assert popups == []
    shot(page, "02-back-on-demo-page-linked")


def test_expired_signed_link_shows_a_friendly_error_page(page, demo_service, emulator, shot):
    service = demo_service()
    open_demo(page, service, "alice", "?link_ttl=1")
    link = page.locator("#user option[value='alice']").get_attribute("data-url")
    expires = int(parse_qs(urlsplit(link).query)["expires"][0])
    while time.time() <= expires + 0.05:  # the page sat open until its signed link expired
        time.sleep(0.1)

    popup = click_connect(page)
    expect(popup.get_by_role("heading", level=1)).to_have_text("This link cannot be used")
    expect(popup.get_by_role("alert")).to_contain_text("expired")
    expect(popup.locator("#error-code")).to_have_text("link_expired")
    assert popup.evaluate("document.documentElement.lang") == "en"
    body = popup.content()
    for secret in (SIGNING_SECRET, API_KEY, parse_qs(urlsplit(link).query)["signature"][0]):
        assert secret not in body
    shot(popup, "01-expired-link-error-page")

    # The opener hears about it at once (origin-checked postMessage from the error page)...
    expect(page.locator("#status")).to_have_attribute("data-state", "error")
    expect(page.locator("#status")).to_have_attribute("data-code", "link_expired")
    # ...and the popup's button says what it does and does it: the app's button makes a fresh link.
    click_and_wait_for_close(popup, popup.get_by_role("button", name="Close this window"))
    expect(page.locator("#status")).to_contain_text("Reload this page for fresh links")
    shot(page, "02-demo-page-after-expired-link")
    assert emulator.calls() == 0


def test_second_click_within_the_links_validity_is_served_from_cache(page, demo_service, emulator, shot):
    service = demo_service()
    open_demo(page, service, "carol@example.com")

    first = click_connect(page)
    expect(first.locator("#profile-key")).to_have_text(PROFILES["carol@example.com"])
    first_url = first.url
    shot(first, "01-first-click-linking-page")
    first.close()  # the user closes the popup without "Done"
    expect(page.locator("#status")).to_have_attribute("data-state", "closed")

    second = click_connect(page)
    expect(second.locator("#profile-key")).to_have_text(PROFILES["carol@example.com"])
    shot(second, "02-second-click-linking-page")

    assert second.url == first_url  # the same still-valid linking URL
    assert emulator.calls() == 1


def test_unknown_user_page_is_friendly_and_leaks_nothing(page, demo_service, emulator, shot):
    service = demo_service()
    open_demo(page, service, "nobody")

    popup = click_connect(page)
    expect(popup.get_by_role("heading", level=1)).to_have_text("This link cannot be used")
    expect(popup.locator("#error-code")).to_have_text("unknown_user")
    expect(popup.get_by_role("button", name="Close this window")).to_be_visible()
    body = popup.content()
    assert API_KEY not in body and SIGNING_SECRET not in body and "PK-" not in body
    expect(page.locator("#status")).to_have_attribute("data-code", "unknown_user")
    shot(popup, "01-unknown-user-error-page")
    assert emulator.calls() == 0
    # Reported, and nothing more to tell: the page lets go of its opener, and "Close this window" still closes it.
    assert popup.evaluate("window.opener === null")
    click_and_wait_for_close(popup, popup.get_by_role("button", name="Close this window"))


def test_the_done_page_lets_go_of_its_opener_once_it_has_reported(page, context, demo_service, emulator, shot):
    service = demo_service()
    context.add_init_script("window.close = () => {};")  # keep the popup open to look at it afterwards
    open_demo(page, service, "alice")
    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["alice"])
    popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    popup.wait_for_url(f"{service.url}/done*")
    assert popup.evaluate("window.opener === null")
    shot(popup, "01-done-page-without-opener")


def test_ayrshare_down_page_offers_a_retry_that_works_once_it_is_back(page, demo_service, emulator, shot):
    service = demo_service(CIRCUIT_COOLDOWN_SECONDS="0.5")
    open_demo(page, service, "alice")
    emulator.set_knobs(fault="503", fault_count=-1)

    popup = click_connect(page)
    expect(popup.get_by_role("heading", level=1)).to_have_text("We could not open the linking page")
    expect(popup.locator("#error-code")).to_have_text("upstream_unavailable")
    assert API_KEY not in popup.content()
    shot(popup, "01-ayrshare-down-error-page")

    emulator.set_knobs(fault=None)
    deadline = time.monotonic() + 20
    while popup.locator("#profile-key").count() == 0:  # a circuit breaker may need its cool-down first
        assert time.monotonic() < deadline, "the retry never reached the linking page"
        popup.get_by_role("button", name="Try again").click()
        popup.wait_for_load_state()
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["alice"])
    shot(popup, "02-linking-page-after-try-again")

    with popup.expect_event("close"):  # "Done" → the service's /done page, which notifies and closes
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")


def test_origin_true_redirects_the_opener_back_to_the_app(page, demo_service, emulator, shot):
    service = demo_service(redirect_query="?origin=true")
    open_demo(page, service, "bob")

    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["bob"])
    with popup.expect_event("close"):  # Ayrshare's rule: the linking page sends the *opener* to the redirect
        popup.click("#done")

    page.wait_for_url(f"{service.url}/demo**")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#status")).to_contain_text("bob")
    shot(page, "01-opener-redirected-back-linked")


def link_network(popup: Page, network: str) -> None:
    """Press the emulator's Link button for `network` (a form post that comes back to the same linking page)."""
    popup.click(f"#link-{network}")
    expect(popup.locator(f"#network-{network}")).to_have_attribute("data-linked", "true")


def test_after_done_the_demo_shows_the_networks_linked_in_the_popup(page, context, demo_service, emulator, shot):
    service = demo_service()
    console: list[str] = []
    context.on("console", lambda message: console.append(message.text))
    accounts_reads: list[str] = []
    page.on("request", lambda request: accounts_reads.append(request.url) if "/accounts" in request.url else None)
    open_demo(page, service, "alice")
    expect(page.locator("#networks")).to_have_text("")

    popup = click_connect(page)
    expect(popup.locator("#profile-key")).to_have_text(PROFILES["alice"])
    link_network(popup, "linkedin")
    shot(popup, "01-linkedin-linked-in-popup")
    with popup.expect_event("close"):
        popup.click("#done")

    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#networks")).to_have_text("Connected: linkedin")
    expect(page.locator("#networks")).to_have_attribute("data-networks", "linkedin")
    shot(page, "02-demo-page-shows-connected-networks")
    # Read by connect.js from the service, with the page's signed link: never from the emulator directly.
    (read,) = accounts_reads
    assert read.startswith(f"{service.url}/connect/alice/accounts?") and "signature=" in read, read
    assert not [text for text in console if "Content Security Policy" in text], console

    # A second round: the page forgets the old answer at the click, then shows the new one.
    popup = click_connect(page)
    expect(page.locator("#networks")).to_have_text("")
    link_network(popup, "twitter")
    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#networks")).to_have_text("Connected: linkedin, twitter")


def test_after_a_same_tab_round_trip_the_demo_shows_the_linked_networks(page, context, demo_service, emulator, shot):
    service = demo_service()
    page.goto(f"{service.url}/demo")
    cdp = context.new_cdp_session(page)  # a click without user activation: the popup is blocked (see above)
    script = "document.getElementById('user').value = 'bob'; document.getElementById('connect').click()"
    with page.expect_navigation(url=f"{emulator.origin}/**"):
        cdp.send("Runtime.evaluate", {"expression": script, "userGesture": False})

    link_network(page, "facebook")
    page.click("#done")
    page.wait_for_url(f"{service.url}/demo**")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#networks")).to_have_text("Connected: facebook")
    expect(page.locator("#networks")).to_have_attribute("data-networks", "facebook")
    shot(page, "01-back-on-demo-page-with-networks")


def test_networks_that_cannot_be_read_leave_the_link_a_success(page, demo_service, emulator, shot):
    service = demo_service()
    open_demo(page, service, "carol@example.com")
    # The service refuses the networks read (as for a link that expired while the popup was open).
    page.route("**/accounts?*", lambda route: route.fulfill(status=401, json={"error": {"code": "link_expired"}}))

    popup = click_connect(page)
    link_network(popup, "linkedin")
    with popup.expect_event("close"):
        popup.click("#done")
    expect(page.locator("#status")).to_have_attribute("data-state", "linked")
    expect(page.locator("#networks")).to_have_text("Linked networks unavailable.")
    assert page.get_attribute("#networks", "data-networks") is None
    shot(page, "01-linked-without-networks")


def test_the_pages_favicon_loads_under_their_policy_and_favicon_ico_leads_to_it(page, demo_service, console_problems):
    service = demo_service()
    page.goto(f"{service.url}/demo")
    href = page.get_attribute("link[rel=icon]", "href")
    assert href == "/static/favicon.svg"
    # Loaded as an image by the page itself: the page's img-src allows it, and it is a real, decodable SVG.
    size = page.evaluate(
        """(href) => new Promise((resolve) => {
             const img = new Image();
             img.onload = () => resolve([img.naturalWidth, img.naturalHeight]);
             img.onerror = () => resolve(null);
             img.src = href;
           })""",
        href,
    )
    assert size is not None and size[0] > 0, size
    answer = page.request.get(f"{service.url}/favicon.ico")  # what a browser asks for on a page that names no icon
    assert answer.ok and answer.headers["content-type"].startswith("image/svg+xml")
    assert answer.url == f"{service.url}/static/favicon.svg"
    assert console_problems == []


def test_in_a_tab_the_error_pages_button_says_what_it_does_and_does_it(page, context, demo_service, emulator, shot):
    service = demo_service(CIRCUIT_COOLDOWN_SECONDS="0.5")
    open_demo(page, service, "nobody")
    link = page.locator("#user option[value='nobody']").get_attribute("data-url")

    # A link that cannot work, followed in the tab: the button goes back to the page the user came from.
    page.goto(f"{service.url}{link}")
    expect(page.get_by_role("heading", level=1)).to_have_text("This link cannot be used")
    expect(page.get_by_role("button")).to_have_text("Go back")
    shot(page, "01-unknown-user-in-a-tab")
    page.get_by_role("button", name="Go back").click()
    page.wait_for_url(f"{service.url}/demo")

    # The same page opened on its own (a new window with no history and no opener): no button that would do
    # nothing; the page says what to do.
    with context.expect_page() as new_page:
        page.evaluate("(url) => window.open(url, '_blank', 'noopener')", f"{service.url}{link}")
    alone = new_page.value
    alone.wait_for_load_state()
    assert alone.evaluate("window.history.length") == 1
    expect(alone.locator("#error-hint")).to_contain_text("Ask the app's support team")
    expect(alone.get_by_role("button")).to_have_count(0)
    shot(alone, "02-unknown-user-alone")

    # A passing failure in the tab: "Try again" retries the same link, and gets through once Ayrshare is back.
    emulator.set_knobs(fault="503", fault_count=-1)
    alice = page.locator("#user option[value='alice']").get_attribute("data-url")
    page.goto(f"{service.url}{alice}")
    expect(page.get_by_role("heading", level=1)).to_have_text("We could not open the linking page")
    emulator.set_knobs(fault=None)
    deadline = time.monotonic() + 20
    while page.locator("#profile-key").count() == 0:  # a circuit breaker may need its cool-down first
        assert time.monotonic() < deadline, "the retry never reached the linking page"
        page.get_by_role("button", name="Try again").click()
        page.wait_for_load_state()
    expect(page.locator("#profile-key")).to_have_text(PROFILES["alice"])


def test_an_unknown_address_shows_a_generic_page_not_found(page, demo_service, shot):
    service = demo_service()
    page.goto(f"{service.url}/demo")
    page.goto(f"{service.url}/no/such/page")
    expect(page.get_by_role("heading", level=1)).to_have_text("Page not found")
    expect(page).to_have_title(re.compile(r"^Page not found"))
    main = page.locator("main").inner_text()
    assert "link" not in main.lower() and "connect" not in main.lower(), main
    assert "(" not in main.split("Error 404")[0]
    shot(page, "01-page-not-found")
    page.get_by_role("button", name="Go back").click()
    page.wait_for_url(f"{service.url}/demo")
