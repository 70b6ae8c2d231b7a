// Candles of one interval (5 s to minutes): the day's candles from the recording
// (`/api/candles`) and Upstox's history (`/api/history`), merged, then continued by live ticks.
// Times are UTC epoch seconds of the bucket's start. Pure code: no DOM, no chart library.

export const MINUTE = 60;

/** The chart's intervals, by the name the recorder's `interval=` takes, in seconds. */
export const INTERVALS = { "5s": 5, "15s": 15, "1m": 60, "5m": 300 };

// Buckets start at 09:15 IST (03:45 UTC) and every interval after it, as the recorder's do.
// 09:15 IST is 13,500 s after a UTC midnight, a multiple of 5 s, 15 s, 1 min, 5 min and
// 15 min (and IST midnight, 66,600 s, is too), so for these intervals this is the same as
// aligning to the epoch; the offset keeps longer intervals (1h: 09:15, 10:15, ...) right.
const OPEN_UTC_SECONDS = (9 * 60 + 15) * 60 - 5.5 * 3600;

/** The start of the `interval`-second bucket holding epoch second `sec`. */
export function bucketStart(sec, interval = MINUTE) {
  const offset = (((sec - OPEN_UTC_SECONDS) % interval) + interval) % interval;
  return sec - offset;
}

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

function candleFrom(row, interval) {
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
    time: bucketStart(time, interval),
    open: values[0],
    high: values[1],
    low: values[2],
    close: values[3],
    volume: Number(volume) || 0,
  };
}

/**
 * Candles from a history response (Upstox's or the recorder's), oldest first, one per
 * `interval`-second bucket. Upstox sends newest first; the answer may wrap the list
 * (`{candles}` or `{data: {candles}}`) or not.
 */
export function parseHistory(body, interval = MINUTE) {
  let rows = body;
  if (rows && !Array.isArray(rows) && rows.data !== undefined) rows = rows.data;
  if (rows && !Array.isArray(rows) && rows.candles !== undefined) rows = rows.candles;
  if (!Array.isArray(rows)) return [];
  const byTime = new Map();
  for (const row of rows) {
    const c = candleFrom(row, interval);
    if (c) byTime.set(c.time, c);
  }
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}

/**
 * Recorded candles and Upstox's, oldest first: the recording wins for every bucket it covers
 * (those are the ticks this deployment saw); Upstox's fill the rest (before the recorder
 * started, a stretch it was down). Both lists must be of the same interval.
 */
export function mergeCandles(recorded, upstox) {
  const byTime = new Map();
  for (const c of upstox) byTime.set(c.time, c);
  for (const c of recorded) byTime.set(c.time, c);
  return [...byTime.values()].sort((a, b) => a.time - b.time);
}

/**
 * Builds candles of `interval` seconds from ticks. `apply*` return the candle that changed (to
 * hand to the chart's `update`), or null when the input was older than the last candle (a chart
 * can only update its last bar or append).
 */
export class CandleBuilder {
  constructor(interval = MINUTE) {
    this.interval = interval;
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
    const time = bucketStart(Math.floor(ltt / 1000), this.interval);
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
   * At any other interval it is ignored: a minute is a fifth of a 5-minute candle, and a
   * 5-second candle is a twelfth of the minute; the ticks build those.
   */
  applyMinuteBar(bar) {
    if (this.interval !== MINUTE) return null;
    if (!bar || !bar.ts || !(bar.high > 0)) return null;
    const time = bucketStart(Math.floor(bar.ts / 1000), MINUTE);
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

// The name the page used when every candle was a minute: a builder at the default interval.
export const MinuteCandles = CandleBuilder;
