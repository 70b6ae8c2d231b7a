"""The standalone JavaScript client (/client/tickstream.js), imported by a page of another site.

A real stack (one gateway, so that killing it really cuts the page off) behind the front; the
page is served by a server of its own (another origin, which the gateway is told to allow) and
imports the module from the front across origins (so the module's CORS header is needed), then
subscribes through its API. Every wait is for a condition with a generous upper bound.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from playwright.async_api import Browser, Page

from tests.dashboard.browser import PageProblems, require_chromium
from tests.support.stack import Stack, running_stack

pytestmark = pytest.mark.browser

WAIT_MS = 45_000  # upper bound for anything to show up; never a timing assertion
GATEWAY = "gateway-1"
NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
TOOL_PAGE = b'<!doctype html><title>a trading tool</title><link rel="icon" href="data:,">'


class _ToolPage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(TOOL_PAGE)))
        self.end_headers()
        self.wfile.write(TOOL_PAGE)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output is not the place for each page load


@pytest.fixture(scope="module")
def tool_origin() -> Iterator[str]:
    """Another site on this machine: a real server, since chromium keeps a page it cannot place
    on loopback (one answered by Playwright itself) from reaching the front there."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ToolPage)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture(scope="module")
def stack(tool_origin: str) -> Iterator[Stack]:
    require_chromium()  # skip before paying for a stack no test can use
    with running_stack(gateways=1, overrides={"GATEWAY_ALLOWED_ORIGINS": tool_origin}) as running:
        yield running


@pytest.fixture
async def tool_page(browser: Browser, stack: Stack, tool_origin: str) -> AsyncIterator[Page]:
    """A page of another origin that has imported the client from the front as `window.ts`."""
    context = await browser.new_context()
    page = await context.new_page()
    problems = PageProblems()
    # A refused WebSocket handshake while the gateway is down is logged by chromium itself.
    problems.watch(page, ignore=("WebSocket connection to",))
    await page.goto(f"{tool_origin}/tool.html")
    await page.evaluate(
        "async (front) => { window.ts = await import(`${front}/client/tickstream.js`); }",
        stack.front_url,
    )
    yield page
    await context.close()
    assert problems.errors == [], "the page logged errors"


async def test_module_is_served_cacheable_to_any_origin(stack: Stack) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{stack.front_url}/client/tickstream.js")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/javascript")
    assert response.headers["access-control-allow-origin"] == "*"
    assert "max-age" in response.headers["cache-control"]
    assert "export function connect" in response.text


async def test_other_page_subscribes_and_resumes_after_gateway_killed(
    tool_page: Page, stack: Stack, tool_origin: str
) -> None:
    page = tool_page
    # Updates are recorded with the number of the connection that brought them.
    await page.evaluate(
        """([front, keys]) => {
          window.seen = []; window.states = [];
          const feed = window.ts.connect(front, { backoff: { base: 200, max: 1000 } });
          feed.on("state", (state) => window.states.push(state));
          feed.on("update", (u) => window.seen.push(
            { key: u.key, ltp: u.value.ltpc && u.value.ltpc.ltp, initial: u.initial,
              conn: feed.stats.connects }));
          feed.subscribe(keys, "ltpc");
          window.feed = feed;
        }""",
        [stack.front_url, [NIFTY, RELIANCE]],
    )
    await page.wait_for_function(
        "keys => keys.every(k => window.seen.some(u => u.key === k && u.initial))"
        " && window.seen.some(u => !u.initial && typeof u.ltp === 'number')",
        arg=[NIFTY, RELIANCE],
        timeout=WAIT_MS,
    )

    await stack.akill(GATEWAY)  # SIGKILL: a crash, no goodbye to the clients
    try:
        await page.wait_for_function(
            "() => window.states.includes('reconnecting')", timeout=WAIT_MS
        )
    finally:
        await stack.astart(GATEWAY)
    # Resumed on a new connection: subscribed again without being asked (a snapshot of every
    # key first), then live updates again.
    await page.wait_for_function(
        "keys => window.feed.stats.connects >= 2"
        " && keys.every(k => window.seen.some(u => u.conn >= 2 && u.key === k && u.initial))"
        " && window.seen.some(u => u.conn >= 2 && !u.initial)",
        arg=[NIFTY, RELIANCE],
        timeout=WAIT_MS,
    )
    assert await page.evaluate("() => window.feed.state") == "open"
    assert page.url == f"{tool_origin}/tool.html"


async def test_refused_credential_is_an_event_not_a_redirect(
    tool_page: Page, tool_origin: str
) -> None:
    """Close 4003 (token expired) stops the feed and tells the page; the page stays put (the
    dashboard's sign-in redirect is its own option, not the client's)."""
    page = tool_page
    # The refusal comes from a stand-in socket: the stack's gateway is open to any viewer.
    detail = await page.evaluate(
        """() => new Promise((resolve) => {
          class Refused {
            constructor() { this.readyState = 0;
              setTimeout(() => { this.readyState = 3;
                this.onclose({ code: 4003, reason: "token expired" }); }); }
            close() {} send() {}
          }
          const feed = window.ts.connect("ws://refused.invalid/ws", { WebSocket: Refused });
          feed.on("unauthorized", (d) => resolve({ ...d, state: feed.state }));
        })"""
    )
    assert detail == {"code": 4003, "reason": "token expired", "state": "stopped"}
    assert page.url == f"{tool_origin}/tool.html"
