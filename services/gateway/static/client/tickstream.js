// tickstream's JavaScript client for the gateway's `/ws` protocol (README: "Client protocol"),
// served by every gateway at /client/tickstream.js as a standalone ES module: no dependency, no
// build step. The dashboard uses it too (../connection.js), so a page importing it gets the same
// behaviour: wanted subscriptions re-sent after every reconnect, jittered exponential backoff
// that resets once a connection has worked, an application ping that notices a dead
// connection, per-instrument sequence tracking, and a snapshot asked for on a new epoch.
//
//   import { connect } from "https://GATEWAY/client/tickstream.js";
//   const feed = connect({ token });            // the /ws of the gateway that served this file
//   feed.on("update", ({ key, value, meta }) => ...);
//   feed.subscribe(["NSE_INDEX|Nifty 50"], "ltpc");

/** The `/ws` URL of the gateway that served this module. */
export function defaultUrl(base = import.meta.url) {
  const url = new URL("/ws", base);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** `url` with the viewer credential as `?token=` (a browser's WebSocket can send no header). */
export function withToken(url, token) {
  if (!token) return url;
  const out = new URL(url);
  out.searchParams.set("token", token);
  return out.href;
}

/** Delay before reconnect attempt `attempt` (0-based): "equal jitter" in [cap/2, cap). */
export function backoffDelay(attempt, { base = 500, max = 30000, random = Math.random } = {}) {
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * Whether a close means this viewer's credential is gone (4003: the token expired; 1008
 * "unauthorized": none or a bad one), so reconnecting would only be refused again.
 */
export function needsSignIn(code, reason) {
  return code === 4003 || (code === 1008 && reason === "unauthorized");
}

const CHUNK = 100; // keys per subscribe message: small frames, well under any size limit

function chunks(list, size) {
  const out = [];
  for (let i = 0; i < list.length; i += size) out.push(list.slice(i, i + size));
  return out;
}

/**
 * Decides, per instrument, whether a feed value is news, and which instruments need a fresh
 * snapshot. Pure: the connection feeds it frames and acks.
 */
export class SequenceTracker {
  constructor() {
    this.last = new Map(); // key -> {seq, epoch}
  }

  forget(keys) {
    for (const key of keys) this.last.delete(key);
  }

  clear() {
    this.last.clear();
  }

  /**
   * Returns {accept, snapshot}. An initial feed is always taken (it is a snapshot). A live
   * value with a new epoch is taken and triggers a snapshot (continuity was lost upstream);
   * one with a sequence number not above the last is a repeat or out of order: dropped, and a
   * number going backwards within an epoch also asks for a snapshot.
   */
  check(key, meta, initial) {
    const prev = this.last.get(key);
    const seq = meta && typeof meta.seq === "number" ? meta.seq : undefined;
    const epoch = meta && meta.epoch !== undefined ? String(meta.epoch) : undefined;
    if (initial || !prev || seq === undefined || epoch === undefined) {
      if (seq !== undefined && epoch !== undefined) this.last.set(key, { seq, epoch });
      return { accept: true, snapshot: false };
    }
    if (epoch !== prev.epoch) {
      this.last.set(key, { seq, epoch });
      return { accept: true, snapshot: true };
    }
    if (seq <= prev.seq) return { accept: false, snapshot: seq < prev.seq };
    this.last.set(key, { seq, epoch });
    return { accept: true, snapshot: false };
  }
}

export class FeedConnection {
  /**
   * handlers: onFeed(entries, type) with entries [[key, value, meta], ...]; onMarketInfo(frame);
   * onStatus(frame); onError(frame); onState(state, detail) with state one of "connecting",
   * "open", "reconnecting", "stopped".
   */
  constructor(url, handlers = {}, options = {}) {
    this.url = url;
    this.h = handlers;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    this.token = options.token;
    this.pingIntervalMs = options.pingIntervalMs ?? 15000;
    this.deadAfterMs = options.deadAfterMs ?? 30000;
    this.backoff = options.backoff || {};
    // Another page decides what a refused credential means (a new token, a message): no default.
    this.signIn = options.signIn || (() => {});
    this.wanted = new Map(); // key -> mode
    this.sent = new Map(); // key -> mode, as the server has it on this connection
    this.pending = new Map(); // request id -> keys of a subscribe not yet acknowledged
    this.resyncTimer = null;
    this.tracker = new SequenceTracker();
    this.ws = null;
    this.attempt = 0;
    this.retryTimer = null;
    this.watchTimer = null;
    this.lastHeard = 0;
    this.lastPing = 0;
    this.nextId = 1;
    this.stopped = true;
    this.lastClose = null;
    // Counters for people (and tests) looking from the console
    this.stats = { connects: 0, feedFrames: 0, snapshots: 0, dropped: 0 };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearInterval(this.watchTimer);
    if (this.ws) this.ws.close(1000, "page closed");
    this.ws = null;
    this.emitState("stopped");
  }

  /** Replace the wanted subscriptions (Map key -> mode) and sync them with the server. */
  setSubscriptions(wanted) {
    this.wanted = new Map(wanted);
    this.sync();
  }

  /** Ask for a fresh initial feed of `keys` (all of ours when omitted). */
  snapshot(keys) {
    this.stats.snapshots += 1;
    const msg = { op: "snapshot", id: this.id("snap") };
    if (keys && keys.length) msg.keys = keys;
    this.send(msg);
  }

  /** Drop the socket now and reconnect at once (a user's "retry" or the browser came online). */
  reconnectNow() {
    if (this.stopped) return;
    this.attempt = 0;
    clearTimeout(this.retryTimer);
    if (this.ws) {
      this.ws.close(4100, "reconnect");
      return; // onclose schedules the reconnect
    }
    this.connect();
  }

  isOpen() {
    return !!this.ws && this.ws.readyState === 1;
  }

  // ---- internals ------------------------------------------------------------------------

  id(prefix) {
    return `${prefix}-${this.nextId++}`;
  }

  emitState(state, detail = {}) {
    if (this.h.onState) this.h.onState(state, detail);
  }

  send(msg) {
    if (!this.isOpen()) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  connect() {
    clearTimeout(this.retryTimer);
    this.emitState("connecting", { attempt: this.attempt });
    const token = typeof this.token === "function" ? this.token() : this.token;
    if (token && typeof token.then === "function") {
      // A token fetched afresh for each connection (a short-lived one from the page's backend).
      const pending = { readyState: 0, close() {} };
      this.ws = pending; // marks the attempt as under way, so a stop() meanwhile wins
      token.then(
        (value) => this.ws === pending && !this.stopped && this.open(value),
        (err) => this.ws === pending && !this.stopped && this.failed(err),
      );
      return;
    }
    this.open(token);
  }

  failed(err) {
    this.ws = null;
    this.scheduleReconnect({ code: 0, reason: String(err) });
  }

  open(token) {
    let ws;
    try {
      ws = new this.WebSocket(withToken(this.url, token));
    } catch (err) {
      this.failed(err);
      return;
    }
    this.ws = ws;
    this.sent.clear();
    ws.onopen = () => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      this.lastPing = Date.now();
      this.stats.connects += 1;
      this.emitState("open", { attempt: this.attempt });
      this.sync();
      clearInterval(this.watchTimer);
      this.watchTimer = setInterval(() => this.watch(), 1000);
    };
    ws.onmessage = (event) => {
      if (ws !== this.ws) return;
      this.lastHeard = Date.now();
      this.attempt = 0; // the connection works: the next outage starts from the short delay
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        return;
      }
      this.dispatch(frame);
    };
    ws.onclose = (event) => {
      if (ws !== this.ws) return;
      this.ws = null;
      clearInterval(this.watchTimer);
      this.sent.clear();
      this.pending.clear();
      if (this.stopped) return;
      if (needsSignIn(event.code, event.reason)) {
        this.stopped = true;
        this.emitState("stopped", { code: event.code, reason: event.reason });
        this.signIn({ code: event.code, reason: event.reason });
        return;
      }
      this.scheduleReconnect({ code: event.code, reason: event.reason });
    };
    ws.onerror = () => {
      // onclose follows and does the work; nothing useful is in an error event.
    };
  }

  scheduleReconnect(detail) {
    this.lastClose = detail;
    const delay = backoffDelay(this.attempt, this.backoff);
    this.attempt += 1;
    this.emitState("reconnecting", { ...detail, delay, attempt: this.attempt, at: Date.now() + delay });
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  /** Notices a connection that died without a close (half-open TCP, a stalled proxy). */
  watch() {
    if (!this.isOpen()) return;
    const now = Date.now();
    if (now - this.lastHeard > this.deadAfterMs) {
      this.ws.close(4101, "no response");
      return;
    }
    if (now - this.lastPing >= this.pingIntervalMs) {
      this.lastPing = now;
      this.send({ op: "ping", id: this.id("ping") });
    }
  }

  sync() {
    if (!this.isOpen()) return;
    const byMode = new Map();
    for (const [key, mode] of this.wanted) {
      if (this.sent.get(key) === mode) continue;
      if (!byMode.has(mode)) byMode.set(mode, []);
      byMode.get(mode).push(key);
    }
    const gone = [...this.sent.keys()].filter((key) => !this.wanted.has(key));
    if (gone.length) {
      for (const keys of chunks(gone, CHUNK)) {
        this.send({ op: "unsubscribe", keys, id: this.id("unsub") });
      }
      for (const key of gone) this.sent.delete(key);
      this.tracker.forget(gone);
    }
    for (const [mode, keys] of byMode) {
      for (const part of chunks(keys, CHUNK)) {
        const id = this.id("sub");
        if (this.send({ op: "subscribe", keys: part, mode, id })) {
          this.pending.set(id, part);
          for (const key of part) this.sent.set(key, mode);
        }
      }
    }
  }

  dispatch(frame) {
    switch (frame.type) {
      case "initial_feed":
      case "live_feed":
        this.onFeedFrame(frame);
        break;
      case "market_info":
        if (this.h.onMarketInfo) this.h.onMarketInfo(frame);
        break;
      case "status":
        if (this.h.onStatus) this.h.onStatus(frame);
        break;
      case "ack":
        this.pending.delete(frame.id);
        // After a subscribe (maybe a mode switch) the sequence numbers are the new mode's.
        if (frame.op === "subscribe" && Array.isArray(frame.keys)) this.tracker.forget(frame.keys);
        if (this.h.onAck) this.h.onAck(frame);
        break;
      case "error":
        this.onErrorFrame(frame);
        break;
      default:
        break; // pong and anything newer: being heard from is all that matters
    }
  }

  onErrorFrame(frame) {
    // Keys the server refused are not subscribed there. They are not re-sent at once (that
    // would only repeat the error): the app decides (another mode, or tell the user), except
    // after a rate limit, when the same request is simply tried again a little later.
    const request = frame.id !== undefined ? this.pending.get(frame.id) : undefined;
    if (frame.id !== undefined) this.pending.delete(frame.id);
    const refused = Array.isArray(frame.keys) && frame.keys.length ? frame.keys : request || [];
    for (const key of refused) this.sent.delete(key);
    if (frame.code === "rate_limited" && refused.length && !this.resyncTimer) {
      this.resyncTimer = setTimeout(() => {
        this.resyncTimer = null;
        this.sync();
      }, 1500);
    }
    if (this.h.onError) this.h.onError(frame);
  }

  onFeedFrame(frame) {
    const feeds = frame.feeds || {};
    const meta = frame.meta || {};
    const initial = frame.type === "initial_feed";
    this.stats.feedFrames += 1;
    const entries = [];
    const stale = [];
    for (const key of Object.keys(feeds)) {
      if (!this.wanted.has(key)) continue; // in flight when we unsubscribed
      const verdict = this.tracker.check(key, meta[key], initial);
      if (verdict.snapshot) stale.push(key);
      if (verdict.accept) entries.push([key, feeds[key], meta[key]]);
      else this.stats.dropped += 1;
    }
    if (stale.length) this.snapshot(stale);
    if (entries.length && this.h.onFeed) this.h.onFeed(entries, frame.type, frame);
  }
}

const EVENTS = ["update", "feed", "state", "market_info", "status", "error", "ack", "unauthorized"];

/**
 * A live feed: `connect()` makes one and starts it. Events (`on(name, fn)`, `off(name, fn)`):
 * - "update" ({key, value, meta, initial}): one instrument's news; `value` is the Upstox-shaped
 *   feed value, `meta` {seq, epoch, ts}, `initial` true when it came in a snapshot;
 * - "feed" (entries, type): the same per frame, entries [[key, value, meta], ...];
 * - "state" (state, detail): "connecting", "open", "reconnecting" (detail.delay, .code,
 *   .reason), "stopped";
 * - "market_info", "status", "error", "ack": the server's frames as they come;
 * - "unauthorized" ({code, reason}): the credential is gone (close 4003, or 1008
 *   "unauthorized"); the feed has stopped, since reconnecting would be refused again. Get a new
 *   token (a `token` function is asked again on each connect) and call `start()`.
 */
export class Feed {
  constructor(url, options = {}) {
    this.listeners = new Map(EVENTS.map((name) => [name, new Set()]));
    this.modes = new Map(); // key -> mode wanted
    this.state = "stopped";
    const emit = (name) => (...args) => this.emit(name, ...args);
    this.conn = new FeedConnection(
      url,
      {
        onFeed: (entries, type, frame) => this.onFeed(entries, type, frame),
        onMarketInfo: emit("market_info"),
        onStatus: emit("status"),
        onError: emit("error"),
        onAck: emit("ack"),
        onState: (state, detail) => {
          this.state = state;
          this.emit("state", state, detail);
        },
      },
      { ...options, signIn: (detail) => this.emit("unauthorized", detail) },
    );
  }

  on(name, fn) {
    if (!this.listeners.has(name)) throw new Error(`tickstream: no event "${name}"`);
    this.listeners.get(name).add(fn);
    return this;
  }

  off(name, fn) {
    if (this.listeners.has(name)) this.listeners.get(name).delete(fn);
    return this;
  }

  /** Subscribe `keys` in `mode` ("ltpc", "full", "option_greeks", "full_d30"); kept across reconnects. */
  subscribe(keys, mode = "ltpc") {
    for (const key of keys) this.modes.set(key, mode);
    this.conn.setSubscriptions(this.modes);
    return this;
  }

  unsubscribe(keys) {
    for (const key of keys) this.modes.delete(key);
    this.conn.setSubscriptions(this.modes);
    return this;
  }

  /** The keys wanted now, with their modes. */
  subscriptions() {
    return new Map(this.modes);
  }

  /** Ask for a fresh snapshot (an "initial" update) of `keys`, or of every key when omitted. */
  snapshot(keys) {
    this.conn.snapshot(keys);
  }

  start() {
    this.conn.start();
    return this;
  }

  /** Close the connection for good (until `start()`). */
  close() {
    this.conn.stop();
  }

  /** Drop the connection and reconnect now (e.g. the browser's "online" event). */
  reconnectNow() {
    this.conn.reconnectNow();
  }

  /** Counters: connects, feedFrames, snapshots, dropped (repeats and out-of-order values). */
  get stats() {
    return this.conn.stats;
  }

  emit(name, ...args) {
    for (const fn of this.listeners.get(name)) {
      try {
        fn(...args);
      } catch (err) {
        // One listener's bug must not starve the others or break the connection.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }

  onFeed(entries, type, frame) {
    const initial = type === "initial_feed";
    for (const [key, value, meta] of entries) this.emit("update", { key, value, meta, initial });
    this.emit("feed", entries, type, frame);
  }
}

/**
 * Connect to a gateway's `/ws` and start: `connect(url?, options?)`. `url` defaults to the
 * gateway that served this module (`ws://` or `wss://`, or an `http(s)://` origin). Options:
 * `token` (a viewer token, or a function returning one or a promise of one, asked on every
 * connect; sent as `?token=`), `backoff` ({base, max} ms: 500 and 30000), `pingIntervalMs`
 * (15000), `deadAfterMs` (30000), `WebSocket` (a constructor, for runtimes without one).
 */
export function connect(url, options) {
  if (url !== undefined && typeof url !== "string") return connect(undefined, url);
  return new Feed(url === undefined ? defaultUrl() : wsUrl(url), options || {}).start();
}

/** An `http(s)://host` (no path) becomes that host's `/ws`; a `ws(s)://` URL is taken as is. */
function wsUrl(url) {
  const parsed = new URL(url);
  if (parsed.protocol === "ws:" || parsed.protocol === "wss:") return parsed.href;
  return defaultUrl(parsed.href);
}
