"""The dashboard's pure JavaScript modules, run in a real browser.

The page's logic that needs no server (feed parsing, candle building, sequence tracking,
backoff, watchlist storage, formatting) is exercised directly: a tiny server gives the modules
an origin to load from, and each test imports them into a blank page and checks the results.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Page
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tests.dashboard.browser import STATIC_DIR, PageProblems, launched_browser
from tests.support.servers import running_server

pytestmark = [pytest.mark.browser, pytest.mark.asyncio(loop_scope="module")]


async def _blank(request: Request) -> HTMLResponse:
    return HTMLResponse('<!doctype html><title>modules</title><link rel="icon" href="data:,">')


def _module_app() -> Starlette:
    return Starlette(
        routes=[
            Route("/blank", _blank),
            Mount("/static", StaticFiles(directory=STATIC_DIR)),
        ]
    )


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def page() -> AsyncIterator[Page]:
    """One browser and page for the module: the tests only import modules into it."""
    async with launched_browser() as browser, running_server(_module_app()) as server:
        context = await browser.new_context()
        page = await context.new_page()
        problems = PageProblems()
        problems.watch(page)
        await page.goto(f"{server.http_url}/blank")
        yield page
        await context.close()
        assert problems.errors == []


async def run(page: Page, body: str) -> Any:
    """Evaluate an async function body in the page; `m` maps module names to modules."""
    script = (
        "async () => { const m = {};"
        " for (const name of ['feed', 'candles', 'connection', 'watchlist', 'format', 'session'])"
        "   m[name] = await import(`/static/${name}.js`);"
        f" {body} }}"
    )
    return await page.evaluate(script)


FULL_MARKET = {
    "fullFeed": {
        "marketFF": {
            "ltpc": {"ltp": 2945.3, "ltt": "1740727891235", "ltq": "75", "cp": 2933.0},
            "marketLevel": {
                "bidAskQuote": [
                    {"bidQ": "120", "bidP": 2945.25, "askQ": "80", "askP": 2945.35},
                    {"bidP": 2945.2, "askQ": "10", "askP": 2945.4},
                ]
            },
            "optionGreeks": {"delta": 0.51, "theta": -12.5, "gamma": 0.0011, "vega": 8.0},
            "marketOHLC": {
                "ohlc": [
                    {
                        "interval": "1d",
                        "open": 2930.0,
                        "high": 2950.0,
                        "low": 2920.5,
                        "close": 2945.3,
                        "vol": "779400",
                        "ts": "1740681000000",
                    },
                    {
                        "interval": "I1",
                        "open": 2944.0,
                        "high": 2946.0,
                        "low": 2943.5,
                        "close": 2945.0,
                        "vol": "1200",
                        "ts": "1740727800000",
                    },
                ]
            },
            "atp": 2940.12,
            "vtt": "779400",
            "tbq": 150000.0,
            "tsq": 90000.0,
        }
    },
    "requestMode": "full_d5",
}


async def test_full_feed_is_flattened_with_missing_fields_as_zero(page: Page) -> None:
    q = await run(
        page,
        f"const q = m.feed.parseFeed({_js(FULL_MARKET)}); return {{q, s: m.feed.summarize(q)}};",
    )
    quote, summary = q["q"], q["s"]
    assert quote["kind"] == "market"
    assert quote["ltpc"] == {"ltp": 2945.3, "ltt": 1740727891235, "ltq": 75, "cp": 2933.0}
    assert quote["depth"][0] == {"bidQ": 120, "bidP": 2945.25, "askQ": 80, "askP": 2945.35}
    assert quote["depth"][1]["bidQ"] == 0  # left out by MessageToDict: zero
    assert quote["greeks"]["rho"] == 0
    assert quote["day"]["vol"] == 779400 and quote["minute"]["close"] == 2945.0
    assert quote["oi"] == 0 and quote["iv"] == 0 and quote["vtt"] == 779400
    assert summary["change"] == pytest.approx(12.3)
    assert summary["pct"] == pytest.approx(12.3 / 2933.0 * 100)
    assert summary["volume"] == 779400
    assert summary["best"]["askP"] == 2945.35


async def test_index_ltpc_and_greeks_shapes(page: Page) -> None:
    index = {
        "fullFeed": {
            "indexFF": {
                "ltpc": {"ltp": 22450.5, "ltt": "1740727891235", "cp": 22300.1},
                "marketOHLC": {"ohlc": [{"interval": "1d", "open": 22310.0, "high": 22500.0}]},
            }
        },
        "requestMode": "full_d5",
    }
    ltpc = {"ltpc": {"ltp": 10.5, "ltt": "1", "ltq": "3", "cp": 10.0}}
    greeks = {
        "firstLevelWithGreeks": {
            "ltpc": {"ltp": 101.0, "cp": 99.0},
            "firstDepth": {"bidQ": "75", "bidP": 100.9, "askQ": "150", "askP": 101.1},
            "optionGreeks": {"delta": 0.4},
            "oi": 1500.0,
            "iv": 0.13,
        },
        "requestMode": "option_greeks",
    }
    out = await run(
        page,
        f"return [{_js(index)}, {_js(ltpc)}, {_js(greeks)}, {{}}, null, {{weird: 1}}]"
        ".map(m.feed.parseFeed);",
    )
    idx, plain, grk, empty, none, weird = out
    assert idx["kind"] == "index" and idx["ltpc"]["ltq"] == 0
    assert idx["day"]["low"] == 0 and idx["day"]["high"] == 22500.0
    assert plain["kind"] == "ltpc" and plain["ltpc"]["ltp"] == 10.5
    assert grk["kind"] == "greeks" and grk["depth"][0]["askQ"] == 150
    assert grk["greeks"]["delta"] == 0.4 and grk["vtt"] == 0 and grk["oi"] == 1500.0
    assert empty is None and none is None and weird is None


async def test_partial_tick_keeps_depth_and_candles_of_the_previous_quote(page: Page) -> None:
    partial = {
        "fullFeed": {"marketFF": {"ltpc": {"ltp": 2946.0, "ltt": "1740727892000", "cp": 2933.0}}},
        "requestMode": "full_d5",
    }
    merged = await run(
        page,
        f"const a = m.feed.parseFeed({_js(FULL_MARKET)});"
        f" const b = m.feed.parseFeed({_js(partial)});"
        " return m.feed.merge(a, b);",
    )
    assert merged["ltpc"]["ltp"] == 2946.0
    assert merged["depth"][0]["bidP"] == 2945.25  # kept: the tick left marketLevel out
    assert merged["day"]["high"] == 2950.0
    assert merged["vtt"] == 0  # a scalar left out is zero, as MessageToDict means it


async def test_history_is_sorted_oldest_first_and_deduplicated(page: Page) -> None:
    body = {
        "candles": [
            ["2025-02-28T09:17:00+05:30", 10, 12, 9, 11, 500, 0],
            ["2025-02-28T09:16:00+05:30", 9, 10, 8, 10, 400, 0],
            ["2025-02-28T09:16:00+05:30", 9, 10, 8, 10, 400, 0],
            ["garbage"],
            ["2025-02-28T09:15:00+05:30", 8, 9, 7, 9, 300, 0],
        ]
    }
    out = await run(
        page,
        f"return [m.candles.parseHistory({_js(body)}),"
        f" m.candles.parseHistory({{data: {_js(body)}}}),"
        " m.candles.parseHistory({error: 'x'})];",
    )
    plain, wrapped, broken = out
    assert [c["time"] for c in plain] == [1740714300, 1740714360, 1740714420]
    assert plain[-1] == {
        "time": 1740714420,
        "open": 10,
        "high": 12,
        "low": 9,
        "close": 11,
        "volume": 500,
    }
    assert wrapped == plain
    assert broken == []


async def test_minute_candles_from_ticks_and_the_upstream_minute_bar(page: Page) -> None:
    minute = 1740714360_000  # 09:16:00 IST in ms
    out = await run(
        page,
        "const c = new m.candles.MinuteCandles();"
        " c.setHistory([{time: 1740714300, open: 8, high: 9, low: 7, close: 9, volume: 300}]);"
        " const t = (...a) => { const x = c.applyTick(...a); return x && {...x}; };"
        f" const r = [t({minute} + 1000, 10, 1000),"
        f"   t({minute} + 5000, 12, 1100),"
        f"   t({minute} + 9000, 9.5, 1150),"
        f"   t({minute} - 61000, 5, 1150),"  # older than the last bar: ignored
        f"   t({minute} + 60000, 11, 1200)];"
        f" const bar = {{ts: {minute}, open: 10, high: 12.5, low: 9, close: 9.5, vol: 260}};"
        " const fixes = [c.applyMinuteBar(bar), c.applyMinuteBar({...bar}),"
        f"   c.applyMinuteBar({{ts: {minute} + 120000, open: 11, high: 11, low: 11, close: 11,"
        "      vol: 5})];"
        " return {r, fixes, candles: c.candles};",
    )
    r = out["r"]
    assert r[0]["time"] == 1740714360 and r[0]["volume"] == 0  # first tick: no volume base yet
    assert r[2] == {
        "time": 1740714360,
        "open": 10,
        "high": 12,
        "low": 9.5,
        "close": 9.5,
        "volume": 150,
    }
    assert r[3] is None
    assert r[4]["time"] == 1740714420 and r[4]["volume"] == 50
    assert out["fixes"] == ["all", None, "last"]
    times = [c["time"] for c in out["candles"]]
    assert times == [1740714300, 1740714360, 1740714420, 1740714480]
    assert out["candles"][1]["high"] == 12.5 and out["candles"][1]["volume"] == 260


OPEN_0915_IST = 1740714300  # 2025-02-28 09:15:00 IST in epoch seconds


async def test_candle_builder_buckets_ticks_at_its_interval_from_0915_ist(page: Page) -> None:
    # 09:15 IST is a whole number of 5 s, 15 s, 1 min and 5 min steps since the epoch: for these
    # intervals aligning to 09:15 IST (the recorder's buckets) and to the epoch are the same.
    assert all(OPEN_0915_IST % step == 0 for step in (5, 15, 60, 300, 900))
    open_ms = OPEN_0915_IST * 1000
    out = await run(
        page,
        "const c = new m.candles.CandleBuilder(5);"
        " const t = (...a) => { const x = c.applyTick(...a); return x && {...x}; };"
        f" const r = [t({open_ms} + 1000, 10, 100), t({open_ms} + 4999, 11, 110),"
        f"   t({open_ms} + 5000, 9, 130), t({open_ms} + 2000, 50, 140),"
        f"   t({open_ms} + 17500, 12, 150)];"
        f" const bar = c.applyMinuteBar({{ts: {open_ms}, open: 1, high: 2, low: 1, close: 2,"
        "   vol: 9});"
        " const b = m.candles.bucketStart;"
        f" const starts = [[{OPEN_0915_IST} + 299, 300], [{OPEN_0915_IST} - 1, 300],"
        f"   [{OPEN_0915_IST} + 3599, 3600], [{OPEN_0915_IST} + 14, 15]].map(([s, i]) => b(s, i));"
        " const legacy = new m.candles.MinuteCandles();"
        " return {r, bar, starts, candles: c.candles, interval: c.interval,"
        "   legacy: legacy.interval, table: m.candles.INTERVALS};",
    )
    times = [c["time"] for c in out["candles"]]
    assert times == [OPEN_0915_IST, OPEN_0915_IST + 5, OPEN_0915_IST + 15]
    assert out["candles"][0] == {
        "time": OPEN_0915_IST,
        "open": 10,
        "high": 11,
        "low": 10,
        "close": 11,
        "volume": 10,
    }
    assert out["r"][3] is None  # older than the last candle: ignored
    assert out["bar"] is None  # Upstox's minute candle says nothing about one of 5 s
    assert out["starts"] == [
        OPEN_0915_IST,
        OPEN_0915_IST - 300,
        OPEN_0915_IST,  # hours start at 09:15, 10:15, ... as the recorder's do
        OPEN_0915_IST,
    ]
    assert out["interval"] == 5 and out["legacy"] == 60
    assert out["table"] == {"5s": 5, "15s": 15, "1m": 60, "5m": 300}


async def test_history_aligns_to_the_interval_asked_for(page: Page) -> None:
    body = {
        "candles": [
            ["2025-02-28T09:20:00+05:30", 11, 13, 10, 12, 600, 0],
            ["2025-02-28T09:15:00+05:30", 8, 9, 7, 9, 300, 0],
            ["2025-02-28T09:15:10+05:30", 9, 9, 9, 9, 5, 0],
        ]
    }
    out = await run(
        page,
        f"return [m.candles.parseHistory({_js(body)}, 300),"
        f" m.candles.parseHistory({_js(body)}, 5)];",
    )
    five_minutes, five_seconds = out
    assert [c["time"] for c in five_minutes] == [OPEN_0915_IST, OPEN_0915_IST + 300]
    assert [c["time"] for c in five_seconds] == [
        OPEN_0915_IST,
        OPEN_0915_IST + 10,
        OPEN_0915_IST + 300,
    ]


async def test_recorded_candles_win_where_they_exist_and_upstox_fills_the_rest(
    page: Page,
) -> None:
    def candle(minute: int, close: float) -> dict[str, float]:
        time = OPEN_0915_IST + 60 * minute
        return {
            "time": time,
            "open": close,
            "high": close,
            "low": close,
            "close": close,
            "volume": 1,
        }

    upstox = [candle(0, 1), candle(1, 1), candle(2, 1), candle(4, 1)]
    recorded = [candle(1, 2), candle(2, 2), candle(3, 2), candle(5, 2)]
    out = await run(
        page,
        f"return [m.candles.mergeCandles({_js(recorded)}, {_js(upstox)}),"
        f" m.candles.mergeCandles([], {_js(upstox)}),"
        f" m.candles.mergeCandles({_js(recorded)}, [])];",
    )
    merged, only_upstox, only_recorded = out
    assert [(c["time"] - OPEN_0915_IST) // 60 for c in merged] == [0, 1, 2, 3, 4, 5]
    assert [c["close"] for c in merged] == [1, 2, 2, 2, 1, 2]
    assert only_upstox == upstox and only_recorded == recorded


async def test_backoff_is_jittered_exponential_and_capped(page: Page) -> None:
    out = await run(
        page,
        "const d = m.connection.backoffDelay;"
        " const lo = [0, 1, 2, 3, 10, 60].map(a => d(a, {random: () => 0}));"
        " const hi = [0, 1, 2, 3, 10, 60].map(a => d(a, {random: () => 0.999999}));"
        " return {lo, hi};",
    )
    assert out["lo"] == [250, 500, 1000, 2000, 15000, 15000]
    assert out["hi"] == [500, 1000, 2000, 4000, 30000, 30000]


async def test_sequence_tracker_accepts_news_and_asks_for_snapshots(page: Page) -> None:
    out = await run(
        page,
        "const t = new m.connection.SequenceTracker(); const c = (k, s, e, i) =>"
        "  t.check(k, {seq: s, epoch: e, ts: 1}, i);"
        " return ["
        "  c('A', 5, 'e1', true),"  # initial feed: always taken
        "  c('A', 6, 'e1', false),"  # next: news
        "  c('A', 9, 'e1', false),"  # a jump: conflated, still the latest value
        "  c('A', 9, 'e1', false),"  # repeat: dropped
        "  c('A', 7, 'e1', false),"  # backwards: dropped, snapshot
        "  c('A', 1, 'e2', false),"  # new epoch: taken, snapshot
        "  c('A', 2, 'e2', false),"
        "  c('B', 3, 'e2', false),"  # first sight of a key: taken
        "  (t.forget(['A']), c('A', 1, 'e3', false)),"  # after a mode switch: taken
        " ];",
    )
    assert out == [
        {"accept": True, "snapshot": False},
        {"accept": True, "snapshot": False},
        {"accept": True, "snapshot": False},
        {"accept": False, "snapshot": False},
        {"accept": False, "snapshot": True},
        {"accept": True, "snapshot": True},
        {"accept": True, "snapshot": False},
        {"accept": True, "snapshot": False},
        {"accept": True, "snapshot": False},
    ]


async def test_watchlist_persists_validates_and_survives_a_corrupt_store(page: Page) -> None:
    out = await run(
        page,
        "localStorage.clear(); const W = m.watchlist.Watchlist;"
        " const first = new W(); const defaults = first.keys();"
        " const added = first.add("
        "   {key: 'NSE_EQ|INE090A01021', symbol: 'ICICIBANK', name: 'ICICI'});"
        " const again = first.add({key: 'NSE_EQ|INE090A01021'});"
        " const bad = first.add({key: 'NSE_EQ|<script>'});"
        " first.remove('NSE_INDEX|Nifty Bank');"
        " const reloaded = new W().items;"
        " localStorage.setItem(m.watchlist.STORAGE_KEY, '{not json');"
        " const corrupt = new W().keys();"
        " localStorage.setItem(m.watchlist.STORAGE_KEY, JSON.stringify(["
        "   {key: 'NSE_EQ|INE002A01018'}, {key: 'bogus'}, {key: 'NSE_EQ|INE002A01018'}]));"
        " const filtered = new W().items;"
        " return {defaults, added, again, bad, reloaded, corrupt, filtered,"
        "   keyOk: ['NSE_INDEX|Nifty 50', 'NSE_FO|45450', 'MCX_FO|1', 'NSE_EQ|', 'XX|1',"
        "           'NSE_EQ|a\"b'].map(m.watchlist.isInstrumentKey)};",
    )
    assert out["defaults"][:2] == ["NSE_INDEX|Nifty 50", "NSE_INDEX|Nifty Bank"]
    assert "NSE_EQ|INE002A01018" in out["defaults"]
    assert out["added"] is True and out["again"] is False and out["bad"] is False
    keys = [item["key"] for item in out["reloaded"]]
    assert keys[-1] == "NSE_EQ|INE090A01021" and "NSE_INDEX|Nifty Bank" not in keys
    assert out["reloaded"][-1]["symbol"] == "ICICIBANK"
    assert out["corrupt"] == out["defaults"]
    assert out["filtered"] == [
        {"key": "NSE_EQ|INE002A01018", "symbol": "INE002A01018", "name": "", "type": ""}
    ]
    assert out["keyOk"] == [True, True, True, False, False, False]


async def test_indian_number_and_ist_time_formats(page: Page) -> None:
    out = await run(
        page,
        "const f = m.format; return [f.price(1234567.891), f.signed(-12.3), f.signed(4),"
        " f.percent(0.4567), f.quantity(12345678), f.quantity(345678), f.quantity(999),"
        " f.integer(1234567), f.price(undefined), f.timeIst(1740727891235),"
        " f.dateTimeIst(Date.parse('2025-02-28T03:30:00+05:30')),"
        " m.session.expiryMs({expires_at: '2025-02-28T03:30:00+05:30'}),"
        " m.session.expiryMs({expires_at: 1740693600})];",
    )
    assert out[:9] == [
        "12,34,567.89",
        "\u221212.30",
        "+4.00",
        "+0.46%",
        "1.23 Cr",
        "3.46 L",
        "999",
        "12,34,567",
        "\u2014",
    ]
    assert out[9] == "13:01:31"
    assert out[10] == "28 Feb, 03:30 IST"
    assert out[11] == out[12] == 1740693600_000


def _js(value: object) -> str:
    """A Python value as a JavaScript literal (JSON is valid JavaScript)."""
    import json

    return json.dumps(value)
