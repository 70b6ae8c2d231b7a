// One-minute candles: the intraday history from `/api/history` continued by live ticks.
// Times are UTC epoch seconds of the minute's start. Pure code: no DOM, no chart library.

export const MINUTE = 60;

/** Epoch seconds from a candle timestamp: ISO-8601 text (Upstox), epoch ms or epoch s. */
export function toEpochSeconds(ts) {
  if (typeof ts === "number") return Math.floor(ts > 1e11 ? ts / 1000 : ts);
  if (typeof ts === "string") {
    if (/^\d+$/.test(ts)) return toEpochSeconds(Number(ts));
    const ms = Date.parse(ts);
    return Number.isNaN(ms) ? undefined : Math.floor(ms / 1000);
  }
  return undefined;
}

function candleFrom(row) {
  let ts, open, high, low, close, volume;
  if (Array.isArray(row)) {
    [ts, open, high, low, close, volume] = row;
  } else if (row && typeof row === "object") {
    ts = row.ts ?? row.time ?? row.timestamp;
    ({ open, high, low, close } = row);
    volume = row.volume ?? row.vol;
  } else {
    return null;
  }
  const time = toEpochSeconds(ts);
  const values = [open, high, low, close].map(Number);
  if (time === undefined || values.some((v) => !Number.isFinite(v))) return null;
  return {
    time: time - (time % MINUTE),
    open: values[0],
    high: values[1],
    low: values[2],
    close: values[3],
    volume: Number(volume) || 0,
  };
}

/**
 * Candles from a history response, oldest first, one per minute. Upstox sends newest first;
 * the gateway may wrap the list (`{candles}` or `{data: {candles}}`) or not.
 */
export function parseHistory(body) {
  let rows = body;
  if (rows && !Array.isArray(rows) && rows.data !== undefined) rows = rows.data;
  if (rows && !Array.isArray(rows) && rows.candles !== undefined) rows = rows.candles;
  if (!Array.isArray(rows)) return [];
  const byTime = new Map();
  for (const row of rows) {
    const c = candleFrom(row);
    if (c) byTime.set(c.time, c);
  }
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}

/**
 * Builds one-minute candles from ticks. `apply*` return the candle that changed (to hand to
 * the chart's `update`), or null when the input was older than the last candle (a chart can
 * only update its last bar or append).
 */
export class MinuteCandles {
  constructor() {
    this.candles = [];
    this.lastVolume = undefined; // cumulative day volume at the previous tick
  }

  setHistory(candles) {
    // History and ticks already received overlap: ticks win for the minutes they cover.
    const live = this.candles.filter((c) => c.time > (candles.at(-1)?.time ?? -Infinity));
    this.candles = [...candles, ...live];
  }

  last() {
    return this.candles.at(-1);
  }

  /** A trade at `price` at `ltt` ms; `dayVolume` is the cumulative volume when known. */
  applyTick(ltt, price, dayVolume) {
    if (!ltt || !Number.isFinite(price) || price <= 0) return null;
    const sec = Math.floor(ltt / 1000);
    const time = sec - (sec % MINUTE);
    let traded = 0;
    if (dayVolume !== undefined && this.lastVolume !== undefined && dayVolume > this.lastVolume) {
      traded = dayVolume - this.lastVolume;
    }
    if (dayVolume !== undefined) this.lastVolume = dayVolume;
    const last = this.last();
    if (last && time < last.time) return null;
    if (last && time === last.time) {
      last.high = Math.max(last.high, price);
      last.low = Math.min(last.low, price);
      last.close = price;
      last.volume += traded;
      return last;
    }
    const candle = { time, open: price, high: price, low: price, close: price, volume: traded };
    this.candles.push(candle);
    return candle;
  }

  /**
   * Upstox's own candle for the last completed minute (`I1` in full mode) is authoritative for
   * that minute: it replaces what the ticks built (or fills a minute no tick was seen in).
   * Returns "last" when only the last bar changed, "all" when an earlier one did, else null.
   */
  applyMinuteBar(bar) {
    if (!bar || !bar.ts || !(bar.high > 0)) return null;
    const sec = Math.floor(bar.ts / 1000);
    const time = sec - (sec % MINUTE);
    const candle = {
      time,
      open: bar.open,
      high: bar.high,
      low: bar.low,
      close: bar.close,
      volume: bar.vol,
    };
    const n = this.candles.length;
    if (n === 0 || time > this.candles[n - 1].time) {
      this.candles.push(candle);
      return "last";
    }
    // Only the recent past is worth correcting; an old repeat is ignored.
    for (let i = n - 1; i >= Math.max(0, n - 5); i--) {
      const c = this.candles[i];
      if (c.time === time) {
        if (c.open === candle.open && c.high === candle.high && c.low === candle.low &&
            c.close === candle.close && c.volume === candle.volume) return null;
        this.candles[i] = candle;
        return i === n - 1 ? "last" : "all";
      }
      if (c.time < time) {
        this.candles.splice(i + 1, 0, candle);
        return "all";
      }
    }
    return null;
  }
}
