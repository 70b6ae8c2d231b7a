// The watchlist the user keeps: instrument keys with the names to show, in order, kept in the
// browser's local storage so it survives a reload.

export const STORAGE_KEY = "tickstream.watchlist.v1";

// First-visit list: the two headline indices, large NSE stocks (cash equities are keyed by
// ISIN), and an index option from the simulator's universe.
export const DEFAULTS = [
  { key: "NSE_INDEX|Nifty 50", symbol: "NIFTY 50", name: "Nifty 50 index" },
  { key: "NSE_INDEX|Nifty Bank", symbol: "NIFTY BANK", name: "Nifty Bank index" },
  { key: "NSE_EQ|INE002A01018", symbol: "RELIANCE", name: "Reliance Industries" },
  { key: "NSE_EQ|INE467B01029", symbol: "TCS", name: "Tata Consultancy Services" },
  { key: "NSE_EQ|INE040A01034", symbol: "HDFCBANK", name: "HDFC Bank" },
  { key: "NSE_EQ|INE009A01021", symbol: "INFY", name: "Infosys" },
];

const SEGMENTS = [
  "NSE_EQ", "NSE_FO", "NSE_INDEX", "NSE_COM", "NCD_FO", "BSE_EQ", "BSE_FO", "BSE_INDEX",
  "BCD_FO", "MCX_FO", "MCX_INDEX", "GLOBAL_INDEX", "GLOBAL_INDICATOR",
];

// Same rule as shared/instruments.py INSTRUMENT_KEY_RE (the gateway checks it again).
const KEY_RE = new RegExp(`^(?:${SEGMENTS.join("|")})\\|[A-Za-z0-9][A-Za-z0-9 &._\\-]{0,63}$`);

export function isInstrumentKey(text) {
  return typeof text === "string" && text.length <= 80 && KEY_RE.test(text);
}

export function segmentOf(key) {
  return key.split("|", 1)[0];
}

export function isIndexKey(key) {
  const seg = segmentOf(key);
  return seg.endsWith("_INDEX") || seg.startsWith("GLOBAL_");
}

/** A short label for a key we know nothing else about: its identifier. */
export function fallbackSymbol(key) {
  const i = key.indexOf("|");
  return i >= 0 ? key.slice(i + 1) : key;
}

function clean(item) {
  if (!item || !isInstrumentKey(item.key)) return null;
  return {
    key: item.key,
    symbol: typeof item.symbol === "string" && item.symbol ? item.symbol : fallbackSymbol(item.key),
    name: typeof item.name === "string" ? item.name : "",
    type: typeof item.type === "string" ? item.type : "",
  };
}

export class Watchlist {
  constructor(storage = window.localStorage, defaults = DEFAULTS) {
    this.storage = storage;
    this.items = this.load(defaults);
    this.listeners = new Set();
  }

  load(defaults) {
    let stored = null;
    try {
      stored = JSON.parse(this.storage.getItem(STORAGE_KEY) || "null");
    } catch {
      stored = null; // a corrupt entry is replaced by the defaults, not fatal
    }
    // A first visit (nothing stored yet) gets the defaults; `fresh` lets the app add more.
    this.fresh = !Array.isArray(stored);
    const source = this.fresh ? defaults : stored;
    const seen = new Set();
    const items = [];
    for (const raw of source) {
      const item = clean(raw);
      if (item && !seen.has(item.key)) {
        seen.add(item.key);
        items.push(item);
      }
    }
    return items;
  }

  save() {
    try {
      this.storage.setItem(STORAGE_KEY, JSON.stringify(this.items));
    } catch {
      // Storage full or disabled (private mode): the list still works for this visit.
    }
    for (const fn of this.listeners) fn(this.items);
  }

  onChange(fn) {
    this.listeners.add(fn);
  }

  keys() {
    return this.items.map((i) => i.key);
  }

  has(key) {
    return this.items.some((i) => i.key === key);
  }

  get(key) {
    return this.items.find((i) => i.key === key);
  }

  /** Add an instrument at the end; returns false when the key is malformed or already there. */
  add(item) {
    const it = clean(item);
    if (!it || this.has(it.key)) return false;
    this.items.push(it);
    this.save();
    return true;
  }

  remove(key) {
    const before = this.items.length;
    this.items = this.items.filter((i) => i.key !== key);
    if (this.items.length !== before) this.save();
  }

  /** Fill in names learnt later (a search result or the instruments API) for a known key. */
  describe(key, { symbol, name, type }) {
    const it = this.get(key);
    if (!it) return;
    let changed = false;
    if (symbol && it.symbol !== symbol) {
      it.symbol = symbol;
      changed = true;
    }
    if (name && it.name !== name) {
      it.name = name;
      changed = true;
    }
    if (type && it.type !== type) {
      it.type = type;
      changed = true;
    }
    if (changed) this.save();
  }
}
