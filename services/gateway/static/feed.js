// One instrument's feed value (Upstox's `feeds[key]` in MessageToDict form) turned into a flat
// quote the views can render. Pure functions: no DOM, no I/O, so they are testable on their own.
//
// MessageToDict leaves out every field that holds its default, and writes int64 as strings, so
// each scalar goes through `num` (missing -> 0). Whole sub-messages (depth, OHLC, greeks) that a
// live tick leaves out are kept from the previous quote: Upstox sends partial `marketFF`s.

export function num(value) {
  if (value === undefined || value === null) return 0;
  const n = typeof value === "number" ? value : Number(value);
  return Number.isFinite(n) ? n : 0;
}

function readLtpc(ltpc) {
  if (!ltpc) return null;
  return { ltp: num(ltpc.ltp), ltt: num(ltpc.ltt), ltq: num(ltpc.ltq), cp: num(ltpc.cp) };
}

function readCandle(c) {
  return {
    interval: c.interval || "",
    open: num(c.open),
    high: num(c.high),
    low: num(c.low),
    close: num(c.close),
    vol: num(c.vol),
    ts: num(c.ts),
  };
}

function readOhlc(marketOHLC) {
  const list = marketOHLC && Array.isArray(marketOHLC.ohlc) ? marketOHLC.ohlc : null;
  if (!list) return { day: null, minute: null };
  let day = null;
  let minute = null;
  for (const c of list) {
    if (c.interval === "1d") day = readCandle(c);
    else if (c.interval === "I1") minute = readCandle(c);
  }
  return { day, minute };
}

function readQuote(q) {
  return { bidQ: num(q.bidQ), bidP: num(q.bidP), askQ: num(q.askQ), askP: num(q.askP) };
}

function readGreeks(g) {
  if (!g) return null;
  return {
    delta: num(g.delta),
    theta: num(g.theta),
    gamma: num(g.gamma),
    vega: num(g.vega),
    rho: num(g.rho),
  };
}

/**
 * Parse one `feeds[key]` value. Returns null for a value of no known shape.
 * Fields a shape does not carry are `undefined` (unknown), never 0, so `merge` can tell
 * "not sent" from "sent as zero".
 */
export function parseFeed(value) {
  if (!value || typeof value !== "object") return null;
  const q = { kind: "ltpc", mode: value.requestMode || "ltpc" };
  if (value.ltpc) {
    q.ltpc = readLtpc(value.ltpc);
    return q;
  }
  if (value.fullFeed) {
    const ff = value.fullFeed;
    if (ff.indexFF) {
      const idx = ff.indexFF;
      q.kind = "index";
      q.ltpc = readLtpc(idx.ltpc);
      const { day, minute } = readOhlc(idx.marketOHLC);
      q.day = day;
      q.minute = minute;
      return q;
    }
    const m = ff.marketFF || {};
    q.kind = "market";
    q.ltpc = readLtpc(m.ltpc);
    if (m.marketLevel) {
      const quotes = Array.isArray(m.marketLevel.bidAskQuote) ? m.marketLevel.bidAskQuote : [];
      q.depth = quotes.map(readQuote);
    }
    q.greeks = readGreeks(m.optionGreeks);
    if (m.marketOHLC) {
      const { day, minute } = readOhlc(m.marketOHLC);
      q.day = day;
      q.minute = minute;
    }
    q.atp = num(m.atp);
    q.vtt = num(m.vtt);
    q.oi = num(m.oi);
    q.iv = num(m.iv);
    q.tbq = num(m.tbq);
    q.tsq = num(m.tsq);
    return q;
  }
  if (value.firstLevelWithGreeks) {
    const f = value.firstLevelWithGreeks;
    q.kind = "greeks";
    q.ltpc = readLtpc(f.ltpc);
    q.depth = f.firstDepth ? [readQuote(f.firstDepth)] : undefined;
    q.greeks = readGreeks(f.optionGreeks);
    q.vtt = num(f.vtt);
    q.oi = num(f.oi);
    q.iv = num(f.iv);
    return q;
  }
  return null;
}

const KEPT_WHEN_ABSENT = ["ltpc", "depth", "greeks", "day", "minute"];

/** The quote after applying `next` on top of `prev` (either may be null). */
export function merge(prev, next) {
  if (!next) return prev;
  if (!prev) return next;
  const out = { ...next };
  for (const field of KEPT_WHEN_ABSENT) {
    if ((out[field] === undefined || out[field] === null) && prev[field]) out[field] = prev[field];
  }
  // A live minute candle is only news when it is a newer minute; an older one is a repeat.
  if (next.minute && prev.minute && next.minute.ts < prev.minute.ts) out.minute = prev.minute;
  return out;
}

/** Derived numbers the views show: change against the previous close and the day's volume. */
export function summarize(q) {
  const ltpc = q && q.ltpc;
  const ltp = ltpc ? ltpc.ltp : undefined;
  const cp = ltpc ? ltpc.cp : undefined;
  const hasCp = cp !== undefined && cp !== 0;
  const change = ltp !== undefined && hasCp ? ltp - cp : undefined;
  const pct = change !== undefined ? (change / cp) * 100 : undefined;
  let volume;
  if (q && q.vtt) volume = q.vtt;
  else if (q && q.day && q.day.vol) volume = q.day.vol;
  const best = q && q.depth && q.depth.length ? q.depth[0] : undefined;
  return { ltp, cp, change, pct, volume, day: q ? q.day : undefined, best };
}

/** Direction of a price move: 1 up, -1 down, 0 unchanged or unknown. */
export function direction(before, after) {
  if (before === undefined || after === undefined || before === after) return 0;
  return after > before ? 1 : -1;
}
