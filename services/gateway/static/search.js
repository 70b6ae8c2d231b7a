// The "add instrument" box: searches the gateway's instrument universe as the user types, and
// takes a pasted instrument key as it is.

import { el } from "./views.js";
import { isInstrumentKey, segmentOf } from "./watchlist.js";

/** A search result in the page's terms, whatever spelling the API used for each field. */
export function normalizeInstrument(r) {
  if (!r || typeof r !== "object") return null;
  const key = r.instrument_key ?? r.key ?? r.instrumentKey;
  if (!isInstrumentKey(key)) return null;
  return {
    key,
    symbol: String(r.trading_symbol ?? r.tradingsymbol ?? r.symbol ?? r.name ?? key),
    name: String(r.name ?? r.short_name ?? ""),
    type: String(r.instrument_type ?? r.type ?? ""),
    expiry: r.expiry ?? "",
    strike: r.strike_price ?? r.strike ?? "",
    segment: r.segment ?? segmentOf(key),
    underlying: r.underlying_key ?? r.underlying ?? "",
  };
}

/** The list inside an `/api/instruments` response (a bare list or one wrapped in an object). */
export function resultsOf(body) {
  let list = body;
  if (list && !Array.isArray(list)) {
    list = list.results ?? list.instruments ?? list.items ?? list.data ?? [];
  }
  if (!Array.isArray(list)) return [];
  return list.map(normalizeInstrument).filter(Boolean);
}

export async function searchInstruments(query, { limit = 20, signal } = {}) {
  const url = `/api/instruments?q=${encodeURIComponent(query)}&limit=${limit}`;
  const res = await fetch(url, { signal, headers: { Accept: "application/json" } });
  if (!res.ok) throw new Error(`search failed (${res.status})`);
  return resultsOf(await res.json());
}

function describe(r) {
  const parts = [r.segment];
  if (r.type) parts.push(r.type);
  if (r.expiry) parts.push(String(r.expiry).slice(0, 10));
  if (r.strike) parts.push(String(r.strike));
  return parts.join(" · ");
}

export class SearchBox {
  constructor(input, list, { onPick, has }) {
    this.input = input;
    this.list = list;
    this.onPick = onPick;
    this.has = has;
    this.results = [];
    this.active = -1;
    this.timer = null;
    this.abort = null;
    input.addEventListener("input", () => this.schedule());
    input.addEventListener("keydown", (ev) => this.onKey(ev));
    input.addEventListener("focus", () => {
      if (this.results.length) this.open(true);
    });
    document.addEventListener("click", (ev) => {
      if (!list.contains(ev.target) && ev.target !== input) this.open(false);
    });
  }

  schedule() {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), 180);
  }

  async run() {
    const q = this.input.value.trim();
    if (this.abort) this.abort.abort();
    if (!q) {
      this.show([]);
      return;
    }
    const pasted = isInstrumentKey(q) ? [{ key: q, symbol: q, name: "", type: "key", pasted: true, segment: segmentOf(q) }] : [];
    this.show(pasted, true);
    const ctrl = new AbortController();
    this.abort = ctrl;
    try {
      const found = await searchInstruments(q, { signal: ctrl.signal });
      if (ctrl.signal.aborted) return;
      const exact = found.find((r) => r.key === q);
      const rest = found.filter((r) => r.key !== q);
      this.show(exact ? [exact, ...rest] : [...pasted, ...rest], false);
    } catch (err) {
      if (ctrl.signal.aborted) return;
      this.show(pasted, false, pasted.length ? "" : `Search unavailable: ${err.message}`);
    }
  }

  show(results, searching = false, error = "") {
    this.results = results;
    this.active = results.length ? 0 : -1;
    this.list.replaceChildren();
    results.forEach((r, i) => {
      const li = el("li", "result");
      li.setAttribute("role", "option");
      li.dataset.key = r.key;
      const main = el("div", "result-main");
      main.append(el("span", "result-sym", r.pasted ? "Add key" : r.symbol), el("span", "result-name", r.pasted ? r.key : r.name));
      const side = el("div", "result-side", this.has(r.key) ? "in list" : describe(r));
      li.append(main, side);
      li.classList.toggle("dim", this.has(r.key));
      li.addEventListener("mousedown", (ev) => ev.preventDefault()); // keep focus in the box
      li.addEventListener("click", () => this.pick(i));
      this.list.appendChild(li);
    });
    if (!results.length) {
      const q = this.input.value.trim();
      if (searching) this.list.appendChild(el("li", "result-note", "Searching…"));
      else if (error) this.list.appendChild(el("li", "result-note", error));
      else if (q) this.list.appendChild(el("li", "result-note", "No match. Paste a key like NSE_EQ|INE002A01018."));
    }
    this.highlight();
    this.open(!!this.input.value.trim());
  }

  highlight() {
    [...this.list.querySelectorAll(".result")].forEach((li, i) => {
      li.classList.toggle("active", i === this.active);
      li.setAttribute("aria-selected", String(i === this.active));
    });
  }

  open(yes) {
    this.list.hidden = !yes;
    this.input.setAttribute("aria-expanded", String(yes));
  }

  pick(i) {
    const r = this.results[i];
    if (!r) return;
    this.onPick({ key: r.key, symbol: r.pasted ? undefined : r.symbol, name: r.name, type: r.type });
    this.input.value = "";
    this.show([]);
    this.open(false);
  }

  onKey(ev) {
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (!this.results.length) return;
      ev.preventDefault();
      const n = this.results.length;
      this.active = (this.active + (ev.key === "ArrowDown" ? 1 : n - 1)) % n;
      this.highlight();
    } else if (ev.key === "Enter") {
      ev.preventDefault();
      const q = this.input.value.trim();
      if (this.active >= 0) this.pick(this.active);
      else if (isInstrumentKey(q)) {
        this.results = [{ key: q, pasted: true }];
        this.pick(0);
      }
    } else if (ev.key === "Escape") {
      this.open(false);
    }
  }
}
