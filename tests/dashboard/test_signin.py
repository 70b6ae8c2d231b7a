"""The dashboard in token mode, in Debian's chromium against the real system through the front:
the page sends a viewer without a token to the sign-in page; a pasted token brings live prices;
when that token expires the gateway closes the feed with 4003 and the page goes back to sign-in
instead of reconnecting forever."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from urllib.parse import urlsplit

import jwt
import pytest
from playwright.async_api import Browser, Page

from tests.dashboard.browser import PageProblems, require_chromium
from tests.dashboard.test_live import NIFTY, WAIT_MS, wait_for_price, wait_for_tick
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.browser

SECRET = "dashboard-viewer-secret-" + "0" * 16


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    require_chromium()
    overrides = {"GATEWAY_VIEWER_ACCESS": "token", "GATEWAY_TOKEN_SECRET": SECRET}
    with running_stack(gateways=1, overrides=overrides) as running:
        yield running


def viewer_token(seconds: int) -> str:
    claims = {"sub": "browser", "exp": int(time.time()) + seconds}
    return jwt.encode(claims, SECRET.encode(), algorithm="HS256")


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context(viewport={"width": 1440, "height": 900})
    page = await context.new_page()
    problems = PageProblems()
    # chromium logs the refused requests and handshakes of a signed-out page itself.
    problems.watch(page, ignore=("WebSocket connection to", "401"))
    yield page
    await context.close()
    assert problems.errors == [], "the page logged errors (CSP refusals show up here too)"


async def sign_in(page: Page, token: str) -> None:
    await page.wait_for_selector("#token", timeout=WAIT_MS)
    await page.fill("#token", token)
    await page.click("#signin-submit")


def path_of(page: Page) -> str:
    return urlsplit(page.url).path


async def test_sign_in_then_live_prices(page: Page, stack: Stack) -> None:
    await page.goto(stack.front_url + "/")
    assert path_of(page) == "/signin"  # no token: the dashboard is not served
    await sign_in(page, "not-a-token")
    assert "neither a valid token" in await page.inner_text("#signin-error")
    await sign_in(page, viewer_token(3600))
    await page.wait_for_url(stack.front_url + "/", timeout=WAIT_MS)
    first = await wait_for_price(page, NIFTY)
    await wait_for_tick(page, NIFTY, first)
    cookies = await page.context.cookies()
    (cookie,) = [c for c in cookies if c["name"] == "tickstream_viewer"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert await page.evaluate("document.cookie") == ""  # out of the page's scripts' reach


async def test_an_expired_token_goes_back_to_sign_in(page: Page, stack: Stack) -> None:
    await page.goto(stack.front_url + "/signin")
    await sign_in(page, viewer_token(8))
    await page.wait_for_url(stack.front_url + "/", timeout=WAIT_MS)
    await wait_for_price(page, NIFTY)
    # At exp the gateway closes with 4003; the page goes to sign-in, coming back to "/".
    await page.wait_for_url("**/signin?next=%2F", timeout=WAIT_MS)
