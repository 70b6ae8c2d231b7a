// tickstream dashboard: wires the feed connection, the watchlist, the detail panel and the
// chart together. Incoming frames only update the model and mark what changed; the DOM is
// touched once per animation frame, so a fast feed costs one render per frame, not per tick.

import { FeedConnection, feedUrl } from "./connection.js";
import { merge, parseFeed } from "./feed.js";
import { CandleBuilder, INTERVALS, MINUTE, mergeCandles, parseHistory } from "./candles.js";
import { PriceChart } from "./chart.js";
import { SearchBox, searchInstruments } from "./search.js";
import { expiryMs, fetchSession, login, logout } from "./session.js";
import * as fmt from "./format.js";
import {
  DetailView,
  WatchlistView,
  renderConnection,
  renderMarketStatus,
  statusLabel,
} from "./views.js";
import { Watchlist, fallbackSymbol, isIndexKey, segmentOf } from "./watchlist.js";

const SELECTED_KEY = "tickstream.selected.v1";
const DEPTH_KEY = "tickstream.depth.v1";
const INTERVAL_KEY = "tickstream.interval.v1";
const STALE_AFTER_MS = 20000; // no tick this long while a watched segment is open: say so
const SESSION_REFRESH_MS = 60000;
const NO_TRADES = "No trades yet today.";

const $ = (id) => document.getElementById(id);

function readPref(name, fallback) {
  try {
    return window.localStorage.getItem(name) ?? fallback;
  } catch {
    return fallback;
  }
}

function readInterval() {
  const name = readPref(INTERVAL_KEY, "1m");
  return Object.hasOwn(INTERVALS, name) ? name : "1m";
}

function writePref(name, value) {
  try {
    window.localStorage.setItem(name, value);
  } catch {
    // private mode: preferences last for this visit only
  }
}

// ---- state ------------------------------------------------------------------------------

const watchlist = new Watchlist();
const quotes = new Map(); // key -> merged quote
const state = {
  selected: readPref(SELECTED_KEY, null),
  depthLevels: readPref(DEPTH_KEY, "5") === "30" ? 30 : 5,
  interval: readInterval(), // a name of INTERVALS: "5s", "15s", "1m", "5m"
  d30Refused: new Set(),
  segmentStatus: {},
  gateway: { redis: "up", ingestor: "", message: "" },
  conn: { state: "connecting", detail: {} },
  lastFeedAt: 0,
  lastTickTs: 0,
  frames: 0,
  candles: new CandleBuilder(MINUTE),
  historyGen: 0,
  chartNote: "",
};

// ---- views ------------------------------------------------------------------------------

const wlView = new WatchlistView($("wl-body"), $("wl-empty"), {
  onSelect: (key) => select(key),
  onRemove: (key) => removeInstrument(key),
});
const detail = new DetailView();
const chart = new PriceChart($("chart"));

// ---- render scheduling ------------------------------------------------------------------

const dirty = new Set();
let detailDirty = false;
let chartDirty = null; // null, "last" or "all"
let frameQueued = false;

function schedule() {
  if (frameQueued) return;
  frameQueued = true;
  window.requestAnimationFrame(flush);
}

function markDirty(key) {
  dirty.add(key);
  if (key === state.selected) detailDirty = true;
  schedule();
}

function flush() {
  frameQueued = false;
  for (const key of dirty) wlView.render(key, quotes.get(key));
  dirty.clear();
  if (detailDirty && state.selected) {
    detail.render(state.selected, quotes.get(state.selected), state.depthLevels);
    const q = quotes.get(state.selected);
    if (q && q.ltpc) chart.setPreviousClose(q.ltpc.cp);
  }
  detailDirty = false;
  if (chartDirty === "all") chart.setCandles(state.candles.candles);
  else if (chartDirty === "last") chart.updateLast(state.candles.last());
  chartDirty = null;
  document.getElementById("chart-note").textContent = state.chartNote;
}

// ---- subscriptions ----------------------------------------------------------------------

function modeFor(key) {
  if (
    key === state.selected &&
    state.depthLevels === 30 &&
    !isIndexKey(key) &&
    !state.d30Refused.has(key)
  ) {
    return "full_d30";
  }
  return "full"; // volume, day OHLC and best bid/ask for every row need the full feed
}

function resubscribe() {
  const wanted = new Map();
  for (const key of watchlist.keys()) wanted.set(key, modeFor(key));
  conn.setSubscriptions(wanted);
}

// ---- feed handling ----------------------------------------------------------------------

function onFeed(entries, type) {
  state.frames += 1;
  state.lastFeedAt = Date.now();
  for (const [key, value, meta] of entries) {
    const parsed = parseFeed(value);
    if (!parsed) continue;
    quotes.set(key, merge(quotes.get(key), parsed));
    if (meta && meta.ts) state.lastTickTs = Number(meta.ts);
    if (key === state.selected) onSelectedTick(parsed, quotes.get(key));
    markDirty(key);
  }
  if (type === "initial_feed") updateStatusLine();
}

function onSelectedTick(parsed, quote) {
  const ltpc = parsed.ltpc;
  if (ltpc && ltpc.ltt && ltpc.ltp) {
    const dayVolume = quote.kind === "market" && quote.vtt ? quote.vtt : undefined;
    if (state.candles.applyTick(ltpc.ltt, ltpc.ltp, dayVolume)) {
      chartDirty = chartDirty || "last";
    }
  }
  if (parsed.minute) {
    const changed = state.candles.applyMinuteBar(parsed.minute);
    if (changed === "all") chartDirty = "all";
    else if (changed === "last") chartDirty = chartDirty || "last";
  }
  if (chartDirty) {
    // A note about where candles come from ("drawing live ticks") stays true while ticks draw.
    if (state.chartNote === NO_TRADES) state.chartNote = "";
    schedule();
  }
}

function onMarketInfo(frame) {
  const info = frame.marketInfo || {};
  state.segmentStatus = info.segmentStatus || {};
  renderSegments();
  if (state.selected) {
    const item = watchlist.get(state.selected);
    if (item) detail.show(item, state.segmentStatus[segmentOf(item.key)]);
    detailDirty = true;
    schedule();
  }
  updateConnection();
}

function renderSegments() {
  const mine = new Set(watchlist.keys().map(segmentOf));
  renderMarketStatus($("market-status"), state.segmentStatus, mine);
}

function onStatus(frame) {
  state.gateway = {
    redis: frame.redis || "up",
    ingestor: frame.ingestor || "",
    message: frame.message || "",
  };
  updateConnection();
  updateStatusLine();
}

function onError(frame) {
  // Retried by the connection (rate limit) or harmless (a snapshot raced an unsubscribe).
  if (frame.code === "rate_limited" || frame.code === "not_subscribed") return;
  const keys = Array.isArray(frame.keys) ? frame.keys : [];
  if (frame.code === "refused_by_upstream" || frame.code === "too_many_keys") {
    // 30-level depth has a small upstream quota: fall back to 5 levels for that instrument.
    const d30 = keys.filter((k) => modeFor(k) === "full_d30");
    if (d30.length) {
      for (const k of d30) state.d30Refused.add(k);
      detail.setDepthNote("30-level depth is not available for this instrument now; showing 5.");
      resubscribe();
      return;
    }
  }
  if (frame.code === "bad_key" || frame.code === "unknown_key") {
    // Never streamable here (an expired contract saved in an old watchlist, a mistyped key).
    for (const k of keys) watchlist.remove(k);
  }
  const what = keys.length ? `${keys.join(", ")}: ` : "";
  showNotice(`${what}${frame.message || frame.code}`);
}

// ---- connection state -------------------------------------------------------------------

function onConnState(connState, detailInfo) {
  const wasDown = state.conn.state === "reconnecting";
  state.conn = { state: connState, detail: detailInfo };
  if (connState === "open" && wasDown && state.selected) {
    // Ticks were missed while away: reload the selected instrument's candles.
    loadHistory(state.selected);
  }
  updateConnection();
  updateStatusLine();
}

function watchedSegmentOpen() {
  return watchlist.keys().some((k) => state.segmentStatus[segmentOf(k)] === "NORMAL_OPEN");
}

function updateConnection() {
  const root = $("conn");
  const text = $("conn-text");
  const c = state.conn;
  // Prices on screen are the last known ones while the page is cut off: the CSS dims them.
  document.body.dataset.conn = c.state;
  if (c.state === "connecting") {
    renderConnection(root, text, "connecting", c.detail.attempt ? "Reconnecting…" : "Connecting…");
    return;
  }
  if (c.state === "reconnecting") {
    const secs = Math.max(0, Math.ceil(((c.detail.at || 0) - Date.now()) / 1000));
    renderConnection(root, text, "reconnecting", secs > 0 ? `Reconnecting in ${secs}s` : "Reconnecting…");
    return;
  }
  if (c.state !== "open") {
    renderConnection(root, text, "offline", "Offline");
    return;
  }
  const g = state.gateway;
  if (g.redis === "down") {
    renderConnection(root, text, "stale", "Stale · feed bus down");
    return;
  }
  if (g.ingestor && g.ingestor !== "connected") {
    renderConnection(root, text, "stale", `Stale · ${ingestorText(g.ingestor)}`);
    return;
  }
  const quiet = state.lastFeedAt ? Date.now() - state.lastFeedAt : 0;
  if (state.lastFeedAt && quiet > STALE_AFTER_MS && watchedSegmentOpen()) {
    renderConnection(root, text, "stale", `Stale · no ticks for ${Math.round(quiet / 1000)}s`);
    return;
  }
  const last = state.lastFeedAt ? ` · ${fmt.timeIst(state.lastFeedAt)}` : "";
  renderConnection(root, text, "live", `Live${last}`);
}

const INGESTOR_TEXT = {
  connected: "upstream connected",
  stalled: "upstream silent, reconnecting",
  connecting: "connecting upstream",
  backoff: "upstream reconnecting",
  waiting_token: "waiting for an Upstox login",
  standby: "no active ingestor",
  starting: "ingestor starting",
  stopped: "ingestor stopped",
  unknown: "no ingestor reporting",
};

function ingestorText(stateName) {
  return INGESTOR_TEXT[stateName] || `ingestor ${stateName.replace(/_/g, " ")}`;
}

function updateStatusLine() {
  const g = state.gateway;
  const parts = [`${watchlist.items.length} instruments`];
  if (state.conn.state !== "open") {
    parts.push("no connection to the gateway: prices shown are the last received");
    $("footer-status").textContent = parts.join(" · ");
    return;
  }
  if (g.ingestor) parts.push(ingestorText(g.ingestor));
  // The gateway's own words are in the tooltip: the line stays short.
  $("footer-status").title = g.message || "";
  parts.push(g.redis === "down" ? "Redis unreachable" : "Redis up");
  $("footer-status").textContent = parts.join(" · ");
}

// ---- selection, history and chart -------------------------------------------------------

function select(key) {
  if (!key || !watchlist.has(key)) key = watchlist.keys()[0] || null;
  const changed = key !== state.selected;
  state.selected = key;
  if (key) writePref(SELECTED_KEY, key);
  wlView.select(key);
  const item = key ? watchlist.get(key) : null;
  detail.show(item, item ? state.segmentStatus[segmentOf(item.key)] : undefined);
  detail.setDepthNote("");
  chart.setPrecision(key && /^(NCD|BCD)_FO/.test(key) ? 4 : 2);
  chart.setVolumeVisible(!key || !isIndexKey(key));
  if (changed || state.candles.candles.length === 0) restartCandles();
  detailDirty = true;
  schedule();
  // Depth mode follows the selection (the old key drops back to "full"); only differences
  // reach the server.
  if (changed) resubscribe();
}

/** Empty the chart and load the selected instrument's candles at the chosen interval. */
function restartCandles() {
  state.candles = new CandleBuilder(INTERVALS[state.interval]);
  chart.clear();
  if (state.selected) loadHistory(state.selected);
}

function chooseInterval(name) {
  state.interval = name;
  writePref(INTERVAL_KEY, name);
  $("interval").value = name;
  chart.setInterval(INTERVALS[name]);
}

// Today's candles from the recording (`/api/candles`, served by the recorder where one runs):
// no Upstox call. `ok` is false where there is no recorder (404/503) or it failed.
async function loadRecordedCandles(key, name) {
  const url = `/api/candles/${encodeURIComponent(key)}?interval=${encodeURIComponent(name)}`;
  try {
    const res = await fetch(url, { headers: { Accept: "application/json" } });
    if (!res.ok) return { ok: false, candles: [] };
    return { ok: true, candles: parseHistory(await res.json(), INTERVALS[name]) };
  } catch {
    return { ok: false, candles: [] };
  }
}

// Upstox's intraday history in `minutes`-minute candles (cached by the gateway); `note` says
// why there is none.
async function loadUpstoxCandles(key, minutes) {
  const url = `/api/history/${encodeURIComponent(key)}?unit=minutes&interval=${minutes}`;
  try {
    const res = await fetch(url, { headers: { Accept: "application/json" } });
    if (res.ok) return { candles: parseHistory(await res.json(), minutes * MINUTE), note: "" };
    if (res.status === 401) {
      return { candles: [], note: "Log in to load today's candles; drawing live ticks." };
    }
    return { candles: [], note: `History unavailable (${res.status}); drawing live ticks only.` };
  } catch {
    return { candles: [], note: "History unavailable; drawing live ticks only." };
  }
}

/**
 * Second candles come only from the recording; minute candles from both sources at once,
 * merged (the recording wins where it has the bucket). Either one alone is enough.
 */
async function loadCandles(key, name) {
  const seconds = INTERVALS[name];
  if (seconds < MINUTE) {
    const recorded = await loadRecordedCandles(key, name);
    const note = recorded.ok ? "" : "Second candles need the recorder; drawing live ticks.";
    return { candles: recorded.candles, note };
  }
  const [recorded, upstox] = await Promise.all([
    loadRecordedCandles(key, name),
    loadUpstoxCandles(key, seconds / MINUTE),
  ]);
  const candles = mergeCandles(recorded.candles, upstox.candles);
  return { candles, note: candles.length ? "" : upstox.note };
}

async function loadHistory(key, attempt = 0) {
  const gen = ++state.historyGen;
  const name = state.interval;
  state.chartNote = "Loading candles…";
  schedule();
  const loaded = await loadCandles(key, name);
  let note = loaded.note;
  // The selection or the interval moved on while loading.
  if (gen !== state.historyGen || key !== state.selected || name !== state.interval) return;
  if (note && attempt < 5) {
    // Auth may not have stored the token yet, or Upstox was busy: try again a few times.
    setTimeout(() => {
      if (gen === state.historyGen && key === state.selected) loadHistory(key, attempt + 1);
    }, Math.min(30000, 2000 * 2 ** attempt));
  }
  state.candles.setHistory(loaded.candles);
  if (!note && !state.candles.candles.length) note = NO_TRADES;
  state.chartNote = note;
  chartDirty = "all";
  schedule();
}

function setDepthLevels(levels) {
  state.depthLevels = levels;
  writePref(DEPTH_KEY, String(levels));
  for (const b of document.querySelectorAll("[data-depth]")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.depth) === levels));
  }
  detail.setDepthNote("");
  resubscribe();
  detailDirty = true;
  schedule();
}

// ---- watchlist editing ------------------------------------------------------------------

function addInstrument(item) {
  if (!watchlist.add(item)) {
    if (watchlist.has(item.key)) select(item.key);
    return;
  }
  if (!item.symbol || !item.name) describeLater([item.key]);
  select(item.key);
}

function removeInstrument(key) {
  watchlist.remove(key);
  quotes.delete(key);
  state.d30Refused.delete(key);
  if (key === state.selected) select(watchlist.keys()[0] || null);
}

/** Names for keys that were pasted or stored without one, from the instruments API. */
async function describeLater(keys) {
  for (const key of keys.slice(0, 12)) {
    try {
      const found = await searchInstruments(fallbackSymbol(key), { limit: 10 });
      const hit = found.find((r) => r.key === key);
      if (hit) watchlist.describe(key, hit);
    } catch {
      return; // the search API is down; names stay as they are
    }
  }
}

/**
 * A first visit also gets an at-the-money Nifty call of the nearest expiry. Option keys are
 * exchange tokens that change with every expiry, so the key is looked up, not hard-coded.
 */
async function addDefaultOption() {
  if (!watchlist.fresh) return;
  const spot = await waitForPrice("NSE_INDEX|Nifty 50", 15000);
  let found;
  try {
    found = await searchInstruments("NIFTY", { limit: 500 });
  } catch {
    return;
  }
  const calls = found.filter(
    (r) => r.type === "CE" && (r.underlying === "NSE_INDEX|Nifty 50" || /^NIFTY\b/.test(r.symbol)),
  );
  if (!calls.length) return;
  const nearest = calls.map((r) => String(r.expiry)).sort()[0];
  const series = calls.filter((r) => String(r.expiry) === nearest);
  const strikes = series.map((r) => Number(r.strike)).sort((a, b) => a - b);
  const target = spot || strikes[Math.floor(strikes.length / 2)];
  series.sort((a, b) => Math.abs(Number(a.strike) - target) - Math.abs(Number(b.strike) - target));
  const pick = series[0];
  if (pick && !watchlist.has(pick.key)) {
    watchlist.add({ key: pick.key, symbol: pick.symbol, name: pick.name, type: pick.type });
  }
}

function waitForPrice(key, timeoutMs) {
  return new Promise((resolve) => {
    const started = Date.now();
    const poll = () => {
      const q = quotes.get(key);
      if (q && q.ltpc && q.ltpc.ltp) resolve(q.ltpc.ltp);
      else if (Date.now() - started > timeoutMs) resolve(undefined);
      else setTimeout(poll, 250);
    };
    poll();
  });
}

watchlist.onChange((items) => {
  wlView.sync(items);
  for (const it of items) markDirty(it.key);
  renderSegments();
  resubscribe();
  updateStatusLine();
  if (state.selected && watchlist.has(state.selected)) {
    detail.show(watchlist.get(state.selected), state.segmentStatus[segmentOf(state.selected)]);
    detailDirty = true;
  }
});

// ---- notices and session ----------------------------------------------------------------

let noticeTimer = null;
function showNotice(text) {
  const box = $("notice");
  box.textContent = text;
  box.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    box.hidden = true;
  }, 8000);
}

// The operator's CSRF token, from the last /session (empty for a viewer).
let csrfToken = "";

async function refreshSession() {
  const s = await fetchSession();
  const root = $("session");
  const wasIn = root.dataset.state === "in";
  if (s.available && s.logged_in && s.valid !== false && !wasIn && root.dataset.state !== "unknown") {
    // Just logged in (another tab, or the token came back): the candles need the new token.
    if (state.selected) loadHistory(state.selected);
  }
  const text = $("session-text");
  const loginBtn = $("login");
  const logoutBtn = $("logout");
  // Log in / Log out are the operator's; a viewer gets only the way to sign in as one.
  const operator = s.available && s.operator === true;
  csrfToken = operator ? s.csrf_token : "";
  root.dataset.role = operator ? "operator" : "viewer";
  $("operator").hidden = !s.available || operator;
  if (!s.available) {
    root.dataset.state = "unavailable";
    text.textContent = "Login service unavailable";
    loginBtn.hidden = true;
    logoutBtn.hidden = true;
    return;
  }
  if (s.logged_in) {
    const until = expiryMs(s);
    root.dataset.state = s.valid === false ? "invalid" : "in";
    if (operator) {
      const who = s.user_name ? `${s.user_name} (${s.user_id})` : s.user_id;
      text.textContent =
        s.valid === false
          ? `${who} · token rejected, log in again`
          : `${who} · until ${fmt.dateTimeIst(until)}`;
      text.title = `Upstox user ${s.user_id}`;
    } else {
      text.textContent =
        s.valid === false
          ? "Upstox feed: login rejected"
          : `Upstox feed: logged in, until ${fmt.dateTimeIst(until)}`;
      text.title = "";
    }
    loginBtn.hidden = !operator || s.valid !== false;
    logoutBtn.hidden = !operator;
  } else {
    root.dataset.state = "out";
    text.textContent = operator ? "Not logged in to Upstox" : "Upstox feed: not logged in";
    text.title = "";
    loginBtn.hidden = !operator;
    logoutBtn.hidden = true;
  }
}

$("login").addEventListener("click", () => login());
$("logout").addEventListener("click", async () => {
  try {
    if (!(await logout(csrfToken))) showNotice("Logout failed; try again.");
  } catch {
    showNotice("Logout failed: the login service is unreachable.");
  }
  refreshSession();
});

for (const b of document.querySelectorAll("[data-depth]")) {
  b.addEventListener("click", () => setDepthLevels(Number(b.dataset.depth)));
}

$("interval").addEventListener("change", (ev) => {
  const name = ev.target.value;
  if (!Object.hasOwn(INTERVALS, name) || name === state.interval) return;
  chooseInterval(name);
  restartCandles();
});

// ---- start ------------------------------------------------------------------------------

const conn = new FeedConnection(feedUrl(), {
  onFeed,
  onMarketInfo,
  onStatus,
  onError,
  onState: onConnState,
});

new SearchBox($("search"), $("search-results"), {
  onPick: addInstrument,
  has: (key) => watchlist.has(key),
});

wlView.sync(watchlist.items);
setDepthLevels(state.depthLevels);
chooseInterval(state.interval);
select(state.selected);
resubscribe();
conn.start();
refreshSession();
updateStatusLine();
describeLater(watchlist.items.filter((i) => !i.name).map((i) => i.key));
addDefaultOption();

setInterval(updateConnection, 1000);
setInterval(refreshSession, SESSION_REFRESH_MS);
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    refreshSession();
    schedule();
  }
});
window.addEventListener("online", () => conn.reconnectNow());
window.addEventListener("pagehide", () => conn.stop());
window.addEventListener("pageshow", (ev) => {
  if (ev.persisted) conn.start(); // restored from the back/forward cache
});

// For people poking at the page from the console, and for the browser tests.
window.tickstream = { conn, quotes, watchlist, state, statusLabel };
