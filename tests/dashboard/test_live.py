"""The dashboard against the real system, in Debian's chromium.

Simulator, Redis, ingestor, gateway, auth and the front run as real processes (the shared
`tests/support/stack.py`, one stack for the module, one gateway so that killing it really cuts
the page off); the browser loads the page from the front like a user. Each test gets a fresh
browser context (empty local storage) and leaves the stack whole. Every wait is for a condition
with a generous upper bound; nothing here measures time.
"""

from __future__ import annotations

import datetime as dt
import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page

from tests.dashboard.browser import (
    REPO,
    PageProblems,
    require_chromium,
    screenshot,
    screenshot_wanted_for_docs,
)
from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.browser

WAIT_MS = 45_000  # upper bound for anything to show up; never a timing assertion
DASH = "\u2014"
RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"
ICICI = "NSE_EQ|INE090A01021"
ITC = "NSE_EQ|INE154A01025"
OPTION_ROW = '#wl-body tr[data-key^="NSE_FO|"]'


@dataclass
class Session:
    stack: Stack
    context: BrowserContext
    page: Page
    problems: PageProblems


GATEWAY = "gateway-1"
RECORDER = "recorder"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """The system for this module: logged in with the simulator's demo token at start."""
    require_chromium()  # skip before paying for a stack no test can use
    with running_stack(gateways=1) as running:
        yield running


async def open_page(
    browser: Browser, stack: Stack, width: int = 1440, height: int = 900
) -> tuple[BrowserContext, Page, PageProblems]:
    context = await browser.new_context(viewport={"width": width, "height": height})
    page = await context.new_page()
    problems = PageProblems()
    # A refused WebSocket handshake while the gateway is down is logged by chromium itself.
    problems.watch(page, ignore=("WebSocket connection to",), not_on=("/v2/login/",))
    await page.goto(stack.front_url + "/")
    return context, page, problems


@pytest.fixture
async def session(browser: Browser, stack: Stack) -> AsyncIterator[Session]:
    context, page, problems = await open_page(browser, stack)
    yield Session(stack, context, page, problems)
    await context.close()
    assert problems.errors == [], "the page logged errors (CSP refusals show up here too)"


def row(key: str) -> str:
    return f'#wl-body tr[data-key="{key}"]'


async def ltp_text(page: Page, key: str) -> str:
    return await page.locator(f"{row(key)} .c-ltp").inner_text()


async def wait_for_price(page: Page, key: str) -> str:
    await page.wait_for_function(
        "([sel, dash]) => { const c = document.querySelector(sel);"
        " return !!c && c.textContent !== dash && c.textContent !== ''; }",
        arg=[f"{row(key)} .c-ltp", DASH],
        timeout=WAIT_MS,
    )
    return await ltp_text(page, key)


async def wait_for_tick(page: Page, key: str, before: str) -> str:
    """Wait until the row's price text differs from `before` (the feed moved it)."""
    await page.wait_for_function(
        "([sel, before, dash]) => { const c = document.querySelector(sel);"
        " return !!c && c.textContent !== before && c.textContent !== dash; }",
        arg=[f"{row(key)} .c-ltp", before, DASH],
        timeout=WAIT_MS,
    )
    return await ltp_text(page, key)


async def wait_for_state(page: Page, *states: str) -> None:
    selector = ", ".join(f'#conn[data-state="{s}"]' for s in states)
    await page.wait_for_selector(selector, timeout=WAIT_MS)


async def test_page_loads_live_and_prices_tick(session: Session) -> None:
    page = session.page
    # The page runs under the gateway's strict CSP (no inline script or style): any refusal
    # would be a console error, which the fixture turns into a failure.
    served = await page.request.get(session.stack.front_url + "/")
    assert "script-src 'self'" in served.headers.get("content-security-policy", "")
    await wait_for_state(page, "live")
    for key in (NIFTY, "NSE_INDEX|Nifty Bank", RELIANCE, "NSE_EQ|INE467B01029"):
        await page.wait_for_selector(row(key), timeout=WAIT_MS)
    # A first visit also gets an at-the-money Nifty call, looked up by the page.
    await page.wait_for_selector(OPTION_ROW, timeout=WAIT_MS)
    assert " CE " in await page.locator(f"{OPTION_ROW} .sym").inner_text()
    first = await wait_for_price(page, RELIANCE)
    second = await wait_for_tick(page, RELIANCE, first)
    assert second != first
    index_first = await wait_for_price(page, NIFTY)
    await wait_for_tick(page, NIFTY, index_first)

    cells = page.locator(row(RELIANCE))
    for cell in (".c-chg", ".c-pct", ".c-vol", ".c-high", ".c-low", ".c-bid", ".c-ask"):
        await page.wait_for_function(
            "([sel, dash]) => { const c = document.querySelector(sel);"
            " return !!c && c.textContent !== dash; }",
            arg=[f"{row(RELIANCE)} {cell}", DASH],
            timeout=WAIT_MS,
        )
    pct = await cells.locator(".c-pct").inner_text()
    assert pct.endswith("%")
    # Colour follows the sign of the change.
    change = await cells.locator(".c-chg").inner_text()
    colour = await cells.locator(".c-chg").get_attribute("class") or ""
    assert ("down" in colour) == change.startswith("\u2212")

    # Market status from market_info: the simulator's market is open.
    await page.wait_for_selector('.chip[data-segment="NSE_EQ"][data-status="NORMAL_OPEN"]')
    assert await page.locator(".chip").count() == 11

    await screenshot(page, "live")
    if screenshot_wanted_for_docs():
        await page.set_viewport_size({"width": 1600, "height": 900})
        await page.click(row(RELIANCE))
        await page.wait_for_selector("#depth-body tr td.up:not(:empty)", timeout=WAIT_MS)
        await page.wait_for_timeout(3000)  # let a few candles and ticks land: a nicer picture
        path = await screenshot(page, "readme")
        shutil.copy(path, REPO / "docs" / "screenshots" / "dashboard.png")


async def test_add_by_search_and_by_key_remove_and_persist(session: Session) -> None:
    page = session.page
    await wait_for_state(page, "live")
    await page.wait_for_selector(row(RELIANCE), timeout=WAIT_MS)
    assert await page.locator(row(ICICI)).count() == 0

    await page.fill("#search", "ICICI")
    await page.click(f'#search-results .result[data-key="{ICICI}"]', timeout=WAIT_MS)
    await page.wait_for_selector(row(ICICI), timeout=WAIT_MS)
    icici = await wait_for_price(page, ICICI)
    await wait_for_tick(page, ICICI, icici)
    assert "ICICIBANK" in await page.locator(f"{row(ICICI)} .sym").inner_text()

    await page.fill("#search", ITC)
    await page.press("#search", "Enter")
    await page.wait_for_selector(row(ITC), timeout=WAIT_MS)
    await wait_for_price(page, ITC)

    await page.reload()
    await wait_for_state(page, "live")
    await page.wait_for_selector(row(ICICI), timeout=WAIT_MS)
    await page.wait_for_selector(row(ITC), timeout=WAIT_MS)
    await wait_for_price(page, ICICI)

    await page.hover(row(ICICI))
    await page.click(f"{row(ICICI)} button.rm")
    await page.wait_for_selector(row(ICICI), state="detached", timeout=WAIT_MS)
    await page.reload()
    await page.wait_for_selector(row(ITC), timeout=WAIT_MS)
    await wait_for_price(page, ITC)
    assert await page.locator(row(ICICI)).count() == 0
    await screenshot(page, "edited-watchlist")


async def test_detail_panel_depth_chart_and_greeks(session: Session) -> None:
    page = session.page
    await wait_for_state(page, "live")
    await page.click(row(RELIANCE))
    await page.wait_for_selector(f"{row(RELIANCE)}.selected")
    assert "RELIANCE" in await page.locator("#d-symbol").inner_text()

    # Five levels of depth with prices and quantities, totals beside them.
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#depth-body tr')].filter(tr =>"
        " tr.children[1].textContent && tr.children[2].textContent).length === 5",
        timeout=WAIT_MS,
    )
    bid, ask = await page.evaluate(
        "() => { const tr = document.querySelector('#depth-body tr');"
        " const n = t => Number(t.replace(/,/g, ''));"
        " return [n(tr.children[1].textContent), n(tr.children[2].textContent)]; }"
    )
    assert 0 < bid < ask
    await page.wait_for_function(
        "() => document.getElementById('d-tbq').textContent !== '\u2014'", timeout=WAIT_MS
    )

    # The chart drew candles: the pane's canvas holds pixels in the up or down colour.
    await page.wait_for_function(CANDLE_PIXELS, timeout=WAIT_MS)

    # Thirty levels on request (full_d30).
    await page.click('[data-depth="30"]')
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#depth-body tr')].filter(tr =>"
        " tr.children[1].textContent).length > 5",
        timeout=WAIT_MS,
    )
    await screenshot(page, "detail-depth30")

    # An option: greeks, OI and IV.
    option = await add_first_option(page)
    await page.click(row(option))
    await page.wait_for_selector("#greeks-card:not([hidden])", timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.querySelector('#greeks [data-stat=\"delta\"] dd').textContent !== '\u2014'",
        timeout=WAIT_MS,
    )
    assert await page.locator('#stats [data-stat="oi"]').is_visible()
    await screenshot(page, "detail-option")


# Counts, on the depth table, the moments its five levels were not all filled in.
WATCH_DEPTH = """() => {
  const filled = () => [...document.querySelectorAll('#depth-body tr')]
    .filter(tr => tr.children[1].textContent && tr.children[2].textContent).length;
  window.depthGaps = 0;
  new MutationObserver(() => { if (filled() < 5) window.depthGaps += 1; })
    .observe(document.getElementById('depth-body'),
             {childList: true, subtree: true, characterData: true});
}"""


async def test_depth_stays_visible_across_partial_ticks(session: Session) -> None:
    """The simulator leaves the unchanged book out of most live ticks (its book changes once a
    second, the stack ticks every 100 ms): the page keeps showing the last book it got."""
    page = session.page
    partial: list[bool] = []  # per live value of the row without a book: flagged partial?

    def on_frame(payload: str | bytes) -> None:
        frame = orjson.loads(payload)
        value = frame.get("feeds", {}).get(RELIANCE) if frame.get("type") == "live_feed" else None
        if value is not None and "marketLevel" not in value["fullFeed"]["marketFF"]:
            partial.append(frame["meta"][RELIANCE].get("partial") is True)

    page.on("websocket", lambda ws: ws.on("framereceived", on_frame))
    await page.reload()  # its WebSocket opens again, now watched
    await wait_for_state(page, "live")
    await page.click(row(RELIANCE))
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#depth-body tr')].filter(tr =>"
        " tr.children[1].textContent && tr.children[2].textContent).length === 5",
        timeout=WAIT_MS,
    )
    # The selection settles (its resubscription answered, a tick of it shown) before watching.
    await wait_for_tick(page, RELIANCE, await ltp_text(page, RELIANCE))
    await page.evaluate(WATCH_DEPTH)
    seen = len(partial)
    await eventually(lambda: len(partial) >= seen + 10, "ten partial ticks of the selected row")
    await wait_for_tick(page, RELIANCE, await ltp_text(page, RELIANCE))
    assert await page.evaluate("() => window.depthGaps") == 0
    assert all(partial)  # the gateway tells clients which values leave parts out
    await screenshot(page, "depth-across-partial-ticks")


async def add_first_option(page: Page) -> str:
    """Add an index option through the search box; returns its key."""
    await page.fill("#search", "NIFTY")
    result = page.locator("#search-results .result").filter(has_text=" CE")
    await result.first.wait_for(timeout=WAIT_MS)
    key = await result.first.get_attribute("data-key")
    assert key is not None and key.startswith("NSE_FO|")
    await result.first.click()
    await page.wait_for_selector(row(key), timeout=WAIT_MS)
    return key


CANDLE_PIXELS = """() => {
  const hits = [...document.querySelectorAll('#chart canvas')].map(c => {
    if (!c.width || !c.height) return 0;
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let n = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 200 && ((g > 150 && r < 100) || (r > 200 && g < 100 && b < 100))) n++;
    }
    return n;
  });
  return hits.some(n => n > 50);
}"""


async def test_phone_layout_fits_the_screen(browser: Browser, stack: Stack) -> None:
    context, page, problems = await open_page(browser, stack, width=390, height=844)
    try:
        await wait_for_state(page, "live")
        await wait_for_price(page, RELIANCE)
        # The default index option has the longest symbol: the table must fit it too.
        await page.wait_for_selector(OPTION_ROW, timeout=WAIT_MS)
        overflow = await page.evaluate(
            "() => document.documentElement.scrollWidth - window.innerWidth"
        )
        assert overflow <= 0, "the page scrolls sideways on a phone"
        table_overflow = await page.evaluate(
            "() => { const w = document.querySelector('.table-wrap');"
            " return w.scrollWidth - w.clientWidth; }"
        )
        assert table_overflow <= 0, "the watchlist needs sideways scrolling on a phone"
        assert await page.locator("#chart canvas").first.is_visible()
        await screenshot(page, "phone", full_page=True)
    finally:
        await context.close()
    assert problems.errors == []


async def test_reconnects_by_itself_after_the_gateway_restarts(session: Session) -> None:
    page = session.page
    await wait_for_state(page, "live")
    before = await wait_for_price(page, RELIANCE)
    await wait_for_tick(page, RELIANCE, before)

    await session.stack.akill(GATEWAY)  # SIGKILL: a crash, no goodbye to the clients
    await wait_for_state(page, "reconnecting", "connecting")
    await screenshot(page, "gateway-down")
    frozen = await ltp_text(page, RELIANCE)

    await session.stack.astart(GATEWAY)
    await wait_for_state(page, "live")
    await wait_for_tick(page, RELIANCE, frozen)
    await screenshot(page, "reconnected")


async def test_five_second_candles_come_from_the_recorder(session: Session) -> None:
    page, stack = session.page, session.stack
    await wait_for_state(page, "live")
    await page.click(row(RELIANCE))
    await page.wait_for_selector(f"{row(RELIANCE)}.selected")
    recorded_url = f"{stack.front_url}/api/candles/{quote(RELIANCE, safe='')}?interval=5s"

    async def recorded_candles() -> list[list[Any]]:
        answer = await page.request.get(recorded_url)
        assert answer.ok, f"the recorder answered {answer.status}"
        candles: list[list[Any]] = (await answer.json())["candles"]
        return candles

    async def recording_has_candles() -> bool:
        return len(await recorded_candles()) >= 3

    # The recorder writes its files every few seconds: wait for some seconds of Reliance.
    await eventually(
        recording_has_candles, "three 5 s candles of Reliance in the recording", within=60
    )

    history: list[str] = []
    page.on("request", lambda r: history.append(r.url) if "/api/history/" in r.url else None)
    async with page.expect_response(
        lambda r: "/api/candles/" in r.url and "interval=5s" in r.url, timeout=WAIT_MS
    ) as answered:
        await page.select_option("#interval", "5s")
    shown = [
        int(dt.datetime.fromisoformat(c[0]).timestamp())
        for c in (await (await answered.value).json())["candles"]
    ]
    assert len(shown) >= 3
    await page.wait_for_function(
        "n => { const s = window.tickstream.state; return s.interval === '5s'"
        " && s.candles.interval === 5 && s.candles.candles.length >= n; }",
        arg=len(shown),
        timeout=WAIT_MS,
    )
    drawn = await page.evaluate("() => window.tickstream.state.candles.candles.map(c => c.time)")
    # Every candle the recorder answered is on the chart, live ticks extend it, all 5 s apart.
    assert set(shown) <= set(drawn)
    assert all(t % 5 == 0 for t in drawn)
    assert all(b > a and (b - a) % 5 == 0 for a, b in itertools.pairwise(drawn))
    assert any(b - a == 5 for a, b in itertools.pairwise(drawn))
    assert history == [], "second candles come from the recording only"
    assert await page.get_attribute("#chart", "aria-label") == "Price chart, 5-second candles"
    await page.wait_for_function(CANDLE_PIXELS, timeout=WAIT_MS)
    await screenshot(page, "chart-5s")

    # The choice is remembered like the other preferences; back at 1m the chart reloads.
    await page.reload()
    await wait_for_state(page, "live")
    assert await page.input_value("#interval") == "5s"
    await page.select_option("#interval", "1m")
    await page.wait_for_function(
        "() => { const c = window.tickstream.state.candles;"
        " return c.interval === 60 && c.candles.length > 0"
        "   && c.candles.every(x => x.time % 60 === 0); }",
        timeout=WAIT_MS,
    )


async def test_second_candles_without_the_recorder_are_built_from_live_ticks(
    session: Session,
) -> None:
    page, stack = session.page, session.stack
    await wait_for_state(page, "live")
    await page.click(row(RELIANCE))
    await page.wait_for_selector(f"{row(RELIANCE)}.selected")
    await stack.akill(RECORDER)  # SIGKILL: the edge has no recorder behind it now
    try:
        await page.select_option("#interval", "15s")
        await page.wait_for_function(
            "() => document.getElementById('chart-note').textContent"
            " === 'Second candles need the recorder; drawing live ticks.'",
            timeout=WAIT_MS,
        )
        await page.wait_for_function(
            "() => { const c = window.tickstream.state.candles;"
            " return c.interval === 15 && c.candles.length >= 2; }",
            timeout=WAIT_MS,
        )
        drawn = await page.evaluate(
            "() => window.tickstream.state.candles.candles.map(c => c.time)"
        )
        assert all(b > a and (b - a) % 15 == 0 for a, b in itertools.pairwise(drawn))
        assert all(t % 15 == 0 for t in drawn)
        # Live ticks drew them: the note stays true and stays up.
        note = await page.locator("#chart-note").inner_text()
        assert note == "Second candles need the recorder; drawing live ticks."
    finally:
        await stack.astart(RECORDER)
    # Chromium logs the edge's refusals while the recorder is down; those are expected here.
    session.problems.errors[:] = [
        e for e in session.problems.errors if not ("/api/candles/" in e and "status of 50" in e)
    ]


async def test_new_epoch_after_an_ingestor_failover_takes_a_snapshot(session: Session) -> None:
    page, stack = session.page, session.stack
    await wait_for_state(page, "live")
    price = await wait_for_price(page, RELIANCE)
    await wait_for_tick(page, RELIANCE, price)
    active = await stack.active_ingestor()
    assert active is not None
    snapshots = await page.evaluate("() => window.tickstream.conn.stats.snapshots")
    connects = await page.evaluate("() => window.tickstream.conn.stats.connects")

    await stack.akill(active)  # the standby takes the lease and streams under a new epoch
    try:
        await page.wait_for_function(
            "n => window.tickstream.conn.stats.snapshots > n", arg=snapshots, timeout=WAIT_MS
        )
        await wait_for_state(page, "live")
        await wait_for_tick(page, RELIANCE, await ltp_text(page, RELIANCE))
    finally:
        await stack.astart(active)  # back as the standby: the stack stays whole
    # The page kept its WebSocket: the gap was upstream, not between page and gateway.
    assert await page.evaluate("() => window.tickstream.conn.stats.connects") == connects


async def test_the_operator_signs_in_logs_out_and_in_through_the_simulated_upstox_dialog(
    session: Session,
) -> None:
    page = session.page
    # A viewer: whether the feed is logged in, nobody's name, no buttons but "Operator".
    await page.wait_for_selector('#session[data-state="in"][data-role="viewer"]', timeout=WAIT_MS)
    viewer = await page.locator("#session-text").inner_text()
    assert viewer.startswith("Upstox feed: logged in, until") and "DEMO01" not in viewer
    assert not await page.locator("#logout").is_visible()
    assert not await page.locator("#login").is_visible()
    assert await page.locator("#operator").get_attribute("href") == "/auth/"

    # The operator opens the one-time link, then comes back to the dashboard.
    await page.goto(await session.stack.mint_operator_link())
    assert await page.locator("form[action=sign-out]").is_visible()
    await page.goto(session.stack.front_url + "/")
    await page.wait_for_selector('#session[data-state="in"][data-role="operator"]', timeout=WAIT_MS)
    assert "DEMO01" in await page.locator("#session-text").inner_text()
    assert not await page.locator("#operator").is_visible()
    await page.click("#logout")
    await page.wait_for_selector('#session[data-state="out"]', timeout=WAIT_MS)
    assert await page.locator("#login").is_visible()
    await screenshot(page, "logged-out")

    await page.click("#login")
    await page.wait_for_url("**/v2/login/**", timeout=WAIT_MS)
    await page.click("button[type=submit]")
    await page.wait_for_url(session.stack.front_url + "/", timeout=WAIT_MS)

    await page.wait_for_selector('#session[data-state="in"]', timeout=WAIT_MS)
    who = await page.locator("#session-text").inner_text()
    assert "Demo Trader" in who and "DEMO01" in who and "IST" in who
    assert await page.locator("#logout").is_visible()
    # With the new token the ingestor streams again and prices move.
    await wait_for_state(page, "live")
    price = await wait_for_price(page, RELIANCE)
    await wait_for_tick(page, RELIANCE, price)
    await screenshot(page, "logged-in")
