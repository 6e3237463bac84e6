"""Closing a popup from its own button, which Playwright may report as an error while the page goes away."""

from __future__ import annotations

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Locator, Page


def click_and_wait_for_close(popup: Page, button: Locator) -> None:
    """Click a button whose handler closes `popup`, and fail unless the popup really closed."""
    with popup.expect_event("close"):
        try:
            button.click(no_wait_after=True)
        except PlaywrightError:
            # The handler closes its own window at once; Playwright may see the page vanish while it finishes the
            # click. That is the behaviour under test, as long as the page really closed.
            if not popup.is_closed():
                raise
