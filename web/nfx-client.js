// nfx-client.js — dependency-free browser client for the nfx in-app WebSocket gateway (served at /v1/client.js).

/**
 * @typedef {{id: string, at: number, category?: string, priority?: string, title?: string, body?: string,
 *   payload?: Record<string, unknown>, seen: boolean, read: boolean, archived: boolean}} Item
 * @typedef {{t: "state", ids: string[], all: boolean, state: {seen?: true, read?: true, archived?: true}, unread: number}} StateEvent
 * @typedef {"connecting"|"connected"|"disconnected"|"unauthorized"} Status
 * @typedef {{token: string, url?: string, WebSocket?: typeof WebSocket, autoSeen?: boolean,
 *   onNotification?: (item: Item) => void, onState?: (ev: StateEvent) => void,
 *   onInbox?: (items: Item[], unread: number) => void, onStatus?: (status: Status) => void,
 *   onError?: (err: Error) => void}} NfxOptions
 */

const REQUEST_TIMEOUT_MS = 10_000;
const BACKOFF_MIN_MS = 500, BACKOFF_MAX_MS = 15_000;
const DEFAULT_HEARTBEAT_MS = 25_000;
const MAX_REMEMBERED = 2000; // delivered item ids kept for dedupe (also across reconnects)

/** Error carrying the server's NFX_ERR_* code (or NFX_CLIENT_* for local failures). */
export class NfxError extends Error {
  /** @param {string} code @param {string} message */
  constructor(code, message) { super(message); this.name = "NfxError"; this.code = code; }
}

export class NfxClient {
  /**
   * Callbacks: onNotification(item) for each new live notification (deduped by item.id);
   * onInbox(items, unread) whenever the local inbox or unread count changes (hello, live item,
   * state change, list page); onState(event) for each server state event; onStatus(status).
   * autoSeen (default true): in a browser, items are marked seen while the page is visible.
   * @param {NfxOptions} opts
   */
  constructor(opts) {
    if (!opts || !opts.token) throw new TypeError("NfxClient: token is required");
    this.opts = opts;
    const loc = globalThis.location;
    this.url = opts.url ?? (loc ? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/v1/ws` : "");
    /** @type {Item[]} current inbox, newest first (read-only for callers) */
    this.items = [];
    /** @type {number} */
    this.unread = 0;
    /** @type {Status} */
    this.status = "disconnected";
    this._ws = null; this._closed = true; this._attempt = 0; this._ref = 0;
    this._pending = new Map(); // ref -> {resolve, reject, timer, cmd}
    this._delivered = new Set(); // item ids already handed to onNotification
    this._hbMs = DEFAULT_HEARTBEAT_MS; this._pingTimer = 0; this._watchdog = 0; this._retryTimer = 0;
    this._onVisible = () => this._autoSeen();
  }

  /** Open the connection; reconnects with jittered exponential backoff until close() or 4401. */
  connect() {
    if (!this._closed) return;
    this._closed = false;
    globalThis.document?.addEventListener("visibilitychange", this._onVisible);
    this._open();
  }

  /** Close for good (no reconnect). Pending requests reject. */
  close() {
    this._closed = true;
    clearTimeout(this._retryTimer);
    globalThis.document?.removeEventListener("visibilitychange", this._onVisible);
    const ws = this._ws;
    this._drop("closed by client");
    ws?.close(1000);
    this._setStatus("disconnected");
  }

  /** Mark items read; ids omitted = everything. Resolves with the new unread count. @param {string[]} [ids] */
  markRead(ids) { return ids ? this._mutate("read", ids) : this._request({ t: "read", all: true }).then((m) => this._applyOk("read", null, m)); }
  /** Mark items seen; ids omitted = all locally unseen items. @param {string[]} [ids] @returns {Promise<number>} */
  markSeen(ids) { return this._mutate("seen", ids ?? this.items.filter((i) => !i.seen).map((i) => i.id)); }
  /** Archive items (removed from the inbox). @param {string[]} ids @returns {Promise<number>} */
  archive(ids) { return this._mutate("archive", ids); }

  /**
   * Fetch an inbox page (older items are merged into `items`).
   * @param {{before?: number, limit?: number}} [q] @returns {Promise<{items: Item[], unread: number}>}
   */
  async list(q = {}) {
    const m = await this._request({ t: "list", ...q });
    for (const it of m.items) if (!it.archived) this._upsert(it);
    this.unread = m.unread; this._changed();
    return { items: m.items, unread: m.unread };
  }

  // ---- requests -------------------------------------------------------------------------

  /** @param {"seen"|"read"|"archive"} t @param {string[]} ids */
  async _mutate(t, ids) {
    if (!Array.isArray(ids)) throw new TypeError(`${t}: ids must be an array`);
    if (ids.length === 0) return this.unread;
    return this._applyOk(t, ids, await this._request({ t, ids }));
  }

  /**
   * Send a command and wait for the reply with the same ref. Commands are NOT queued: while
   * disconnected they reject immediately with NfxError code NFX_CLIENT_DISCONNECTED.
   * @param {Record<string, unknown>} cmd @returns {Promise<any>}
   */
  _request(cmd) {
    return new Promise((resolve, reject) => {
      if (this.status !== "connected") return reject(new NfxError("NFX_CLIENT_DISCONNECTED", "not connected"));
      const ref = ++this._ref;
      const timer = setTimeout(() => {
        this._pending.delete(ref);
        reject(new NfxError("NFX_CLIENT_TIMEOUT", `${cmd.t} timed out`));
      }, REQUEST_TIMEOUT_MS);
      this._pending.set(ref, { resolve, reject, timer });
      this._send({ ...cmd, ref });
    });
  }

  /** Apply a confirmed mutation locally too (idempotent with the matching state event). */
  _applyOk(t, ids, m) {
    const state = t === "archive" ? { archived: true } : { [t]: true };
    this._applyState(ids ?? [], !ids, state, m.unread);
    return this.unread;
  }

  // ---- connection -----------------------------------------------------------------------

  _open() {
    this._setStatus("connecting");
    const WS = this.opts.WebSocket ?? globalThis.WebSocket;
    const ws = new WS(`${this.url}${this.url.includes("?") ? "&" : "?"}token=${encodeURIComponent(this.opts.token)}`);
    this._ws = ws;
    ws.onopen = () => { if (this._ws === ws) this._kick(); };
    ws.onmessage = (ev) => { if (this._ws === ws) this._onMessage(ev.data); };
    ws.onclose = (ev) => { if (this._ws === ws) this._onClose(ev.code); };
    ws.onerror = () => {}; // a close event always follows
  }

  /** @param {number} code */
  _onClose(code) {
    this._drop(`connection closed (${code})`);
    if (code === 4401) { this._closed = true; return this._setStatus("unauthorized"); }
    this._setStatus("disconnected");
    if (this._closed) return;
    // 1008 (policy: bad token / rate abuse) waits the full backoff ceiling.
    const base = code === 1008 ? BACKOFF_MAX_MS : Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** this._attempt++);
    this._retryTimer = setTimeout(() => this._open(), base / 2 + Math.random() * base / 2);
  }

  /** Forget the current socket: stop timers and reject every pending request. */
  _drop(reason) {
    this._ws = null;
    clearInterval(this._pingTimer); clearTimeout(this._watchdog);
    for (const p of this._pending.values()) { clearTimeout(p.timer); p.reject(new NfxError("NFX_CLIENT_DISCONNECTED", reason)); }
    this._pending.clear();
  }

  /** Reset the silence watchdog: no message for 2×heartbeat → drop the socket and reconnect. */
  _kick() {
    clearTimeout(this._watchdog);
    const ws = this._ws;
    this._watchdog = setTimeout(() => { ws?.close(4000, "heartbeat timeout"); if (this._ws === ws) this._onClose(4000); }, 2 * this._hbMs);
  }

  _send(msg) { if (this._ws?.readyState === 1) this._ws.send(JSON.stringify(msg)); }

  // ---- inbound --------------------------------------------------------------------------

  _onMessage(data) {
    this._kick();
    let m;
    try { m = JSON.parse(data); } catch { return; }
    switch (m.t) {
      case "hello":
        this._attempt = 0;
        this._hbMs = m.heartbeatMs > 0 ? m.heartbeatMs : DEFAULT_HEARTBEAT_MS;
        clearInterval(this._pingTimer);
        this._pingTimer = setInterval(() => this._send({ t: "ping" }), this._hbMs);
        this._kick();
        this.items = (m.items ?? []).filter((i) => !i.archived).sort((a, b) => b.at - a.at);
        for (const it of this.items) this._remember(it.id);
        this.unread = m.unread ?? 0;
        this._setStatus("connected");
        this._changed();
        break;
      case "n": this._onNotification(m.id, m.item); break;
      case "state":
        this._applyState(m.ids ?? [], !!m.all, m.state ?? {}, m.unread);
        this._call("onState", m);
        break;
      case "inbox": case "ok": case "error": {
        const p = this._pending.get(m.ref);
        if (m.t === "error" && !p) { this._call("onError", new NfxError(m.code, m.message)); break; }
        if (!p) break;
        this._pending.delete(m.ref); clearTimeout(p.timer);
        m.t === "error" ? p.reject(new NfxError(m.code, m.message)) : p.resolve(m);
        break;
      }
      // "pong" and unknown types only feed the watchdog.
    }
  }

  /** @param {string} deliveryId @param {Item} item */
  _onNotification(deliveryId, item) {
    if (item && !this._delivered.has(item.id) && !this.items.some((i) => i.id === item.id)) {
      this._remember(item.id);
      this._upsert(item);
      if (!item.read) this.unread++;
      this._call("onNotification", item);
      this._changed();
    }
    this._send({ t: "ack", id: deliveryId }); // ack after the app got it (or it was a duplicate)
  }

  /** @param {string[]} ids @param {boolean} all @param {{seen?: boolean, read?: boolean, archived?: boolean}} state @param {number} [unread] */
  _applyState(ids, all, state, unread) {
    const set = new Set(ids);
    const hit = (/** @type {Item} */ i) => all || set.has(i.id);
    if (state.archived) this.items = this.items.filter((i) => !hit(i));
    else for (const i of this.items) if (hit(i)) {
      if (state.read) i.read = i.seen = true;
      if (state.seen) i.seen = true;
    }
    if (typeof unread === "number") this.unread = unread;
    this._changed();
  }

  // ---- helpers --------------------------------------------------------------------------

  /** Insert or replace an item, keeping newest-first order. @param {Item} item */
  _upsert(item) {
    this.items = this.items.filter((i) => i.id !== item.id);
    const at = this.items.findIndex((i) => i.at < item.at);
    this.items.splice(at < 0 ? this.items.length : at, 0, item);
  }

  _remember(id) {
    this._delivered.add(id);
    if (this._delivered.size > MAX_REMEMBERED) this._delivered.delete(this._delivered.values().next().value);
  }

  _changed() { this._call("onInbox", this.items, this.unread); this._autoSeen(); }

  /** Mark unseen items seen when the page is visible (browser only, best effort). */
  _autoSeen() {
    const doc = globalThis.document;
    if (this.opts.autoSeen === false || !doc || doc.visibilityState !== "visible" || this.status !== "connected") return;
    const ids = this.items.filter((i) => !i.seen && !this._seenSent?.has(i.id)).map((i) => i.id);
    if (!ids.length) return;
    (this._seenSent ??= new Set()); ids.forEach((id) => this._seenSent.add(id));
    this.markSeen(ids).catch(() => {}).finally(() => ids.forEach((id) => this._seenSent.delete(id)));
  }

  /** @param {Status} s */
  _setStatus(s) { if (s !== this.status) { this.status = s; this._call("onStatus", s); } }

  _call(name, ...args) {
    try { this.opts[name]?.(...args); } catch (err) { console.error(`nfx: ${name} callback threw`, err); }
  }
}
