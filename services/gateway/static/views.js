// DOM views. Each creates its elements once and afterwards only changes text and classes, so a
// render per animation frame stays cheap however fast the feed is. No inline styles: the page's
// CSP forbids them; widths of depth bars go through the CSSOM (element.style), which it allows.

import * as fmt from "./format.js";
import { direction, summarize } from "./feed.js";
import { segmentOf, isIndexKey } from "./watchlist.js";

export function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function setSign(node, value) {
  node.classList.toggle("up", value > 0);
  node.classList.toggle("down", value < 0);
}

/** Decimals a price is quoted in: currency derivatives go to 4, everything else to 2. */
export function decimalsFor(key) {
  const seg = segmentOf(key);
  return seg === "NCD_FO" || seg === "BCD_FO" ? 4 : 2;
}

/** One cell holding two stacked values (high over low, bid over ask). */
function pair(tr, cls, topCls, bottomCls) {
  const td = el("td", "num two " + cls);
  const top = el("div", topCls, fmt.DASH);
  const bottom = el("div", bottomCls, fmt.DASH);
  td.append(top, bottom);
  tr.appendChild(td);
  const [a, b] = [topCls.slice(2), bottomCls.slice(2)];
  return { [a]: top, [b]: bottom };
}

// ---- watchlist --------------------------------------------------------------------------

export class WatchlistView {
  constructor(tbody, emptyNote, { onSelect, onRemove }) {
    this.tbody = tbody;
    this.emptyNote = emptyNote;
    this.rows = new Map();
    this.onSelect = onSelect;
    this.onRemove = onRemove;
    this.selected = null;
  }

  /** Make the rows match the list: create new ones, drop removed ones, keep the order. */
  sync(items) {
    const keys = new Set(items.map((i) => i.key));
    for (const [key, row] of this.rows) {
      if (!keys.has(key)) {
        row.tr.remove();
        this.rows.delete(key);
      }
    }
    for (const item of items) {
      let row = this.rows.get(item.key);
      if (!row) {
        row = this.createRow(item);
        this.rows.set(item.key, row);
      }
      setText(row.sym, item.symbol);
      setText(row.nm, item.name ? `${item.name} · ${segmentOf(item.key)}` : segmentOf(item.key));
      this.tbody.appendChild(row.tr); // appending an existing node moves it: keeps the order
    }
    this.emptyNote.hidden = items.length > 0;
    this.select(this.selected);
  }

  createRow(item) {
    const tr = el("tr");
    tr.dataset.key = item.key;
    tr.tabIndex = 0;
    const symCell = el("td", "c-sym");
    const sym = el("div", "sym");
    const nm = el("div", "nm");
    symCell.append(sym, nm);
    const cell = (cls) => {
      const td = el("td", "num " + cls, fmt.DASH);
      tr.appendChild(td);
      return td;
    };
    tr.appendChild(symCell);
    const row = {
      tr,
      sym,
      nm,
      ltp: cell("c-ltp"),
      chg: cell("c-chg"),
      pct: cell("c-pct"),
      vol: cell("c-vol opt-md"),
      open: cell("c-open opt-lg"),
      ...pair(tr, "c-hl opt-md", "c-high", "c-low"),
      ...pair(tr, "c-ba opt-md", "c-bid", "c-ask"),
      lastLtp: undefined,
      flip: false,
    };
    const x = el("td", "c-x");
    const btn = el("button", "rm", "\u00d7");
    btn.type = "button";
    btn.title = "Remove from watchlist";
    btn.setAttribute("aria-label", `Remove ${item.symbol}`);
    btn.addEventListener("click", (ev) => {
      ev.stopPropagation();
      this.onRemove(item.key);
    });
    x.appendChild(btn);
    tr.appendChild(x);
    tr.addEventListener("click", () => this.onSelect(item.key));
    tr.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        this.onSelect(item.key);
      } else if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
        ev.preventDefault();
        const next = ev.key === "ArrowDown" ? tr.nextElementSibling : tr.previousElementSibling;
        if (next) {
          next.focus();
          this.onSelect(next.dataset.key);
        }
      } else if (ev.key === "Delete") {
        this.onRemove(item.key);
      }
    });
    return row;
  }

  select(key) {
    this.selected = key;
    for (const [k, row] of this.rows) row.tr.classList.toggle("selected", k === key);
  }

  render(key, quote) {
    const row = this.rows.get(key);
    if (!row || !quote) return;
    const s = summarize(quote);
    const dp = decimalsFor(key);
    setText(row.ltp, fmt.price(s.ltp, dp));
    setText(row.chg, fmt.signed(s.change, dp));
    setText(row.pct, fmt.percent(s.pct));
    setSign(row.chg, s.change);
    setSign(row.pct, s.change);
    setSign(row.ltp, s.change);
    const move = direction(row.lastLtp, s.ltp);
    if (move !== 0) {
      // Two animation names per direction: switching name restarts the flash on every tick
      // without forcing a layout to reset the same animation.
      row.flip = !row.flip;
      row.ltp.classList.remove("flash-up-a", "flash-up-b", "flash-down-a", "flash-down-b");
      row.ltp.classList.add(`flash-${move > 0 ? "up" : "down"}-${row.flip ? "a" : "b"}`);
    }
    row.lastLtp = s.ltp;
    setText(row.vol, isIndexKey(key) ? fmt.DASH : fmt.quantity(s.volume));
    setText(row.open, fmt.price(s.day && s.day.open, dp));
    setText(row.high, fmt.price(s.day && s.day.high, dp));
    setText(row.low, fmt.price(s.day && s.day.low, dp));
    setText(row.bid, s.best && s.best.bidP ? fmt.price(s.best.bidP, dp) : fmt.DASH);
    setText(row.ask, s.best && s.best.askP ? fmt.price(s.best.askP, dp) : fmt.DASH);
    row.bid.title = s.best ? `qty ${fmt.integer(s.best.bidQ)}` : "";
    row.ask.title = s.best ? `qty ${fmt.integer(s.best.askQ)}` : "";
  }
}

// ---- detail panel -----------------------------------------------------------------------

const STAT_FIELDS = [
  ["open", "Open"],
  ["high", "High"],
  ["low", "Low"],
  ["cp", "Prev close"],
  ["volume", "Volume"],
  ["atp", "Avg price"],
  ["oi", "Open interest"],
  ["iv", "Implied vol"],
  ["ltq", "Last qty"],
  ["ltt", "Last trade"],
];

const GREEK_FIELDS = [
  ["delta", "Delta"],
  ["gamma", "Gamma"],
  ["theta", "Theta"],
  ["vega", "Vega"],
  ["rho", "Rho"],
];

function buildList(dl, fields) {
  const out = {};
  for (const [id, label] of fields) {
    const wrap = el("div", "stat");
    wrap.dataset.stat = id;
    wrap.append(el("dt", "", label), el("dd", "mono", fmt.DASH));
    dl.appendChild(wrap);
    out[id] = { wrap, dd: wrap.lastChild };
  }
  return out;
}

export class DetailView {
  constructor(doc = document) {
    const $ = (id) => doc.getElementById(id);
    this.root = $("detail");
    this.symbol = $("d-symbol");
    this.name = $("d-name");
    this.key = $("d-key");
    this.seg = $("d-seg");
    this.ltp = $("d-ltp");
    this.change = $("d-change");
    this.ltt = $("d-ltt");
    this.stats = buildList($("stats"), STAT_FIELDS);
    this.greeksCard = $("greeks-card");
    this.greeks = buildList($("greeks"), GREEK_FIELDS);
    this.depthCard = $("depth-card");
    this.depthBody = $("depth-body");
    this.depthNote = $("depth-note");
    this.tbq = $("d-tbq");
    this.tsq = $("d-tsq");
    this.ratioBuy = $("d-ratio-buy");
    this.depthRows = [];
    this.lastLtp = undefined;
    this.flip = false;
  }

  show(item, marketStatus) {
    const key = item ? item.key : "";
    setText(this.symbol, item ? item.symbol : fmt.DASH);
    setText(this.name, item ? item.name : "");
    setText(this.key, key);
    setText(this.seg, key ? `${segmentOf(key)} · ${statusLabel(marketStatus)}` : "");
    this.seg.dataset.status = marketStatus || "";
    this.root.dataset.kind = !item ? "none" : isIndexKey(key) ? "index" : "market";
    this.lastLtp = undefined;
    this.render(key, null, 5);
  }

  render(key, quote, levels) {
    const s = summarize(quote);
    const dp = key ? decimalsFor(key) : 2;
    setText(this.ltp, fmt.price(s.ltp, dp));
    setSign(this.ltp, s.change);
    setText(this.change, s.change === undefined ? fmt.DASH : `${fmt.signed(s.change, dp)} (${fmt.percent(s.pct)})`);
    setSign(this.change, s.change);
    const move = direction(this.lastLtp, s.ltp);
    if (move !== 0) {
      this.flip = !this.flip;
      this.ltp.classList.remove("flash-up-a", "flash-up-b", "flash-down-a", "flash-down-b");
      this.ltp.classList.add(`flash-${move > 0 ? "up" : "down"}-${this.flip ? "a" : "b"}`);
    }
    this.lastLtp = s.ltp;
    const ltpc = quote && quote.ltpc;
    setText(this.ltt, ltpc && ltpc.ltt ? `last trade ${fmt.timeIst(ltpc.ltt)} IST` : "");

    const index = key && isIndexKey(key);
    const v = {
      open: fmt.price(s.day && s.day.open, dp),
      high: fmt.price(s.day && s.day.high, dp),
      low: fmt.price(s.day && s.day.low, dp),
      cp: fmt.price(s.cp || undefined, dp),
      volume: index ? fmt.DASH : fmt.quantity(s.volume),
      atp: fmt.price(quote && quote.atp ? quote.atp : undefined, dp),
      oi: quote && quote.oi ? fmt.quantity(quote.oi) : fmt.DASH,
      iv: quote && quote.iv ? fmt.decimal(quote.iv, 2) : fmt.DASH,
      ltq: ltpc && ltpc.ltq ? fmt.integer(ltpc.ltq) : fmt.DASH,
      ltt: ltpc && ltpc.ltt ? fmt.timeIst(ltpc.ltt) : fmt.DASH,
    };
    for (const [id] of STAT_FIELDS) setText(this.stats[id].dd, v[id]);
    // Index feeds carry no trading fields; derivatives-only fields are noise on a stock.
    const derivative = key && /_FO$/.test(segmentOf(key));
    for (const id of ["atp", "ltq"]) this.stats[id].wrap.hidden = !!index;
    for (const id of ["oi", "iv"]) this.stats[id].wrap.hidden = !derivative;

    const greeks = quote && quote.greeks;
    this.greeksCard.hidden = !greeks;
    if (greeks) {
      for (const [id] of GREEK_FIELDS) setText(this.greeks[id].dd, fmt.decimal(greeks[id], 4));
    }
    this.depthCard.hidden = !!index;
    if (!index) this.renderDepth(quote, levels, dp);
  }

  renderDepth(quote, levels, dp) {
    const depth = (quote && quote.depth) || [];
    while (this.depthRows.length < levels) this.depthRows.push(this.createDepthRow());
    while (this.depthRows.length > levels) this.depthRows.pop().tr.remove();
    let maxQ = 1;
    for (let i = 0; i < levels; i++) {
      const q = depth[i];
      if (q) maxQ = Math.max(maxQ, q.bidQ, q.askQ);
    }
    for (let i = 0; i < levels; i++) {
      const row = this.depthRows[i];
      const q = depth[i];
      const has = (p) => q && p > 0;
      setText(row.bidQ, has(q && q.bidP) ? fmt.integer(q.bidQ) : "");
      setText(row.bidP, has(q && q.bidP) ? fmt.price(q.bidP, dp) : "");
      setText(row.askP, has(q && q.askP) ? fmt.price(q.askP, dp) : "");
      setText(row.askQ, has(q && q.askP) ? fmt.integer(q.askQ) : "");
      row.bidBar.style.width = has(q && q.bidP) ? `${(100 * q.bidQ) / maxQ}%` : "0%";
      row.askBar.style.width = has(q && q.askP) ? `${(100 * q.askQ) / maxQ}%` : "0%";
    }
    const tbq = quote && quote.tbq;
    const tsq = quote && quote.tsq;
    setText(this.tbq, tbq ? fmt.quantity(tbq) : fmt.DASH);
    setText(this.tsq, tsq ? fmt.quantity(tsq) : fmt.DASH);
    const total = (tbq || 0) + (tsq || 0);
    this.ratioBuy.style.width = total ? `${(100 * (tbq || 0)) / total}%` : "50%";
    this.depthCard.dataset.levels = String(depth.length);
  }

  createDepthRow() {
    const tr = el("tr");
    const bidQ = el("td", "num mono up-soft");
    const bidP = el("td", "num mono up");
    const askP = el("td", "num mono down");
    const askQ = el("td", "num mono down-soft");
    const bidBar = el("span", "bar bar-bid");
    const askBar = el("span", "bar bar-ask");
    bidQ.appendChild(bidBar);
    askQ.appendChild(askBar);
    // The quantity text sits in its own node so setText does not wipe the bar.
    const bidText = el("span", "qty");
    const askText = el("span", "qty");
    bidQ.appendChild(bidText);
    askQ.appendChild(askText);
    tr.append(bidQ, bidP, askP, askQ);
    this.depthBody.appendChild(tr);
    return { tr, bidQ: bidText, bidP, askP, askQ: askText, bidBar, askBar };
  }

  setDepthNote(text) {
    setText(this.depthNote, text);
  }
}

// ---- market status, connection, session -------------------------------------------------

const STATUS_LABELS = {
  PRE_OPEN_START: "Pre-open",
  PRE_OPEN_END: "Pre-open end",
  NORMAL_OPEN: "Open",
  NORMAL_CLOSE: "Closed",
  CLOSING_START: "Closing",
  CLOSING_END: "Closed",
};

export function statusLabel(status) {
  return STATUS_LABELS[status] || (status ? status : "status unknown");
}

function statusClass(status) {
  if (status === "NORMAL_OPEN") return "open";
  if (status === "PRE_OPEN_START" || status === "PRE_OPEN_END" || status === "CLOSING_START") {
    return "pre";
  }
  return status ? "closed" : "unknown";
}

export function renderMarketStatus(container, segmentStatus, highlight) {
  const chips = container.children;
  const entries = Object.entries(segmentStatus || {});
  // Segments in the watchlist first, then the rest as Upstox orders them.
  entries.sort((a, b) => Number(highlight.has(b[0])) - Number(highlight.has(a[0])));
  while (chips.length > entries.length) container.lastChild.remove();
  entries.forEach(([seg, status], i) => {
    let chip = chips[i];
    if (!chip) {
      chip = el("span", "chip");
      chip.append(el("span", "chip-dot"), el("span", "chip-seg"), el("span", "chip-state"));
      container.appendChild(chip);
    }
    chip.dataset.segment = seg;
    chip.dataset.status = status;
    chip.className = `chip ${statusClass(status)}${highlight.has(seg) ? " mine" : ""}`;
    setText(chip.children[1], seg.replace("_", " "));
    setText(chip.children[2], statusLabel(status));
    chip.title = `${seg}: ${status}`;
  });
}

export function renderConnection(root, textNode, state, text) {
  root.dataset.state = state;
  setText(textNode, text);
}
