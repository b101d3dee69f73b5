// WebSocket gateway on uWebSockets.js: holds users' live connections at /v1/ws, takes their live items on one subscription of its own (`nfx.live.<gateway>`), keeps presence, applies inbox actions, and mounts the inbox API (lib/inapp/inbox-http.ts), the browser client and the demo page.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { fileURLToPath } from "node:url";

import { headers, type Msg } from "@nats-io/transport-node";
import type { TemplatedApp, WebSocket } from "uWebSockets.js";
import { z } from "zod";

import { decodeJson, encode, encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { NfxError, RequestInvalid, toErrorReply } from "../lib/core/errors.js";
import type { Logger } from "../lib/core/log.js";
import { BROADCAST_LIVE_SUBJECT, isInboxReply, LIVE_USER_HEADER, liveSubject, MSGID, receiptSubject } from "../lib/core/subjects.js";
import type { ReceiptBatch } from "../lib/core/types.js";
import { type Broadcast, broadcastsFor } from "../lib/inapp/broadcasts.js";
import { Inbox, INBOX_STATE_BITS, type InboxAction, itemWithState } from "../lib/inapp/inbox.js";
import { inboxIds, invalidRequest, markTarget, mountInboxHttp, userTokenOf } from "../lib/inapp/inbox-http.js";
import { gatewaysOf, PresenceWriter } from "../lib/inapp/presence.js";
import { UserTokens } from "../lib/inapp/ws-token.js";
import { Exchange, fixed, listen, noRoute, Origins } from "../lib/infra/http.js";
import { wsConnections } from "../lib/infra/metrics.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";
import { requireNativeUws } from "../lib/infra/uws.js";
import { engagementFor } from "../lib/tracking/engagement.js";

export interface WsGatewayDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  log: Logger;
}

/** Per connection (uWS user data): kept small, a gateway holds 100,000 of these. */
interface Conn {
  user: string;
  id: number;
  /** Token expiry (ms): the connection is closed with 4401 then. */
  exp: number;
  /** Rate-limit bucket: tokens left and when last refilled. */
  tokens: number;
  at: number;
}

/** The connections of one user held here (an array: almost always one or two, and a Set costs several times more), and offers waiting for a client's ack. */
interface Held {
  conns: WebSocket<Conn>[];
  pending: Map<string, Msg> | null;
}

/** Client commands, validated before anything changes. */
const ref = z.union([z.string().max(64), z.number()]).optional();
const command = z.discriminatedUnion("t", [
  z.strictObject({ t: z.literal("ack"), id: z.string().min(1).max(128) }),
  z.strictObject({ t: z.literal("ping") }),
  z.strictObject({ t: z.enum(["seen", "read", "archive"]), ids: inboxIds.optional(), all: z.literal(true).optional(), ref }),
  z.strictObject({ t: z.literal("list"), before: z.number().int().min(0).optional(), limit: z.number().int().min(1).max(200).optional(), ref }),
]);
type Command = z.infer<typeof command>;

/** Close codes: 1008 policy (rate limit, bad frames), 1011 cannot serve it now (the inbox read for `hello` failed), 4401 token expired. */
const CLOSE_POLICY = 1008;
const CLOSE_UNAVAILABLE = 1011;
const CLOSE_EXPIRED = 4401;

const ARCHIVED_BIT = INBOX_STATE_BITS.ARCHIVED;

/** The answer to an offer for a user this gateway holds no connection of. */
const NOT_HERE = encodeJson({ ok: false });

const webFile = (name: string): Buffer => readFileSync(fileURLToPath(new URL(`../../web/${name}`, import.meta.url)));

/**
 * Starts the gateway on `ws.host:ws.port` (0 picks a port). The handshake
 * at `/v1/ws` needs a user token (`?token=` or `Authorization: Bearer`) and,
 * from browsers, an allowed Origin; failures answer 401/403 before any
 * upgrade. Each connection gets `hello` with its unread count and latest
 * items, then live items as they come; messages are limited in size and
 * rate (closed with 1008 beyond them); idle connections are pinged and
 * dropped when they stop answering; a connection is closed with 4401 when
 * its token expires. HTTP: `GET /v1/inbox`, `POST /v1/inbox/{seen|read|archive}`,
 * `GET /v1/client.js`, `GET /demo`, `GET /healthz`. The wire protocol is in docs/inapp.md.
 */
export async function startWsGateway(d: WsGatewayDeps): Promise<{ port: number; gateway: string; connections(): number; stop(): Promise<void> }> {
  const uws = requireNativeUws();
  const w = d.cfg.ws;
  const gateway = `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
  const log = d.log.child({ actor: "ws-gateway", gateway });
  const tokens = new UserTokens(w.secret, w.issuer);
  const broadcasts = broadcastsFor(d.cfg, d.redis);
  const inbox = new Inbox(d.redis, { shards: d.cfg.cluster.shards, cap: w.inboxCap, retentionMs: w.inboxRetentionDays * 86_400_000, broadcasts });
  const engagement = engagementFor(d.cfg, d.nats, d.redis);
  const presence = new PresenceWriter({ nats: d.nats, redis: d.redis, log, shards: d.cfg.cluster.shards, gateway, ttlMs: w.presenceTtlSec * 1000 });
  const held = new Map<string, Held>();
  const origins = new Origins(w.origins, w.allowNoOrigin);
  let nextId = 1;
  let open = 0;

  /** Sends one message, corked: most sends run outside uWS's own callbacks (after a Redis or NATS answer), where uWS wants each write corked. */
  const sendTo = (ws: WebSocket<Conn>, msg: unknown): void => {
    const text = typeof msg === "string" ? msg : JSON.stringify(msg);
    ws.cork(() => ws.send(text, false));
  };

  /**
   * Delivers a message of this gateway's live subject to every connection here of the user it names: an offer
   * (remembered until a client acks) or a state change. An offer for a user no longer held here is answered `ok: false`
   * at once, so the dispatcher need not wait out its timeout.
   */
  const onLive = (m: Msg): void => {
    const user = m.headers?.get(LIVE_USER_HEADER) ?? "";
    const h = held.get(user);
    if (!h) {
      if (m.reply) m.respond(NOT_HERE);
      return;
    }
    const text = m.string();
    if (m.reply) {
      const id = (JSON.parse(text) as { id?: string }).id;
      if (!id) return;
      (h.pending ??= new Map()).set(id, m);
      setTimeout(() => h.pending?.delete(id), w.ackTimeoutMs + 1000).unref();
    }
    for (const ws of h.conns) sendTo(ws, text);
  };
  const liveSub = d.nats.nc.subscribe(liveSubject(gateway), { callback: (err, m) => void (err ? undefined : onLive(m)) });

  /**
   * A new broadcast: listed here at once, and shown live to every connection of each user held here whom it reaches
   * (the read-time policy applied per user, as an inbox read would), 500 users at a time. No ack is awaited: a broadcast
   * has no fallback, and the inbox holds it for everyone it reaches either way.
   */
  const onBroadcast = async (b: Broadcast): Promise<void> => {
    if (!broadcasts.note(b)) return;
    const users = [...held.keys()];
    const text = JSON.stringify({ t: "n", id: b.id, item: itemWithState(b.item) });
    let shown = 0;
    for (let i = 0; i < users.length; i += 500) {
      const part = users.slice(i, i + 500);
      const hits = await Promise.all(part.map((u) => broadcasts.reaching(u, Date.now(), [b]).then((r) => r.length > 0 && (r[0].state & ARCHIVED_BIT) === 0)));
      part.forEach((u, k) => {
        if (!hits[k]) return;
        for (const ws of held.get(u)?.conns ?? []) sendTo(ws, text);
        shown++;
      });
    }
    log.info({ broadcast: b.id, shown, held: users.length }, "broadcast shown live");
  };
  const bcastSub = d.nats.nc.subscribe(BROADCAST_LIVE_SUBJECT, {
    callback: (err, m) => {
      if (err) return;
      void onBroadcast(decodeJson<Broadcast>(m.data)).catch((e) => log.warn({ err: e }, "live broadcast failed"));
    },
  });
  // Registered with the server before any connection is accepted, so presence never names a gateway that cannot be reached.
  await d.nats.nc.flush();

  /** Publishes a change to every connection of the user on every gateway holding one (this one included). */
  const broadcast = async (user: string, msg: unknown): Promise<void> => {
    const h = headers();
    h.set(LIVE_USER_HEADER, user);
    const body = encodeJson(msg);
    // This gateway too, even before its presence write for a just-opened connection has landed.
    for (const g of new Set([gateway, ...(await gatewaysOf(d.redis, d.cfg.cluster.shards, user))])) d.nats.nc.publish(liveSubject(g), body, { headers: h });
  };

  /** Applies an inbox action; read and seen become receipts; every connection of the user learns the new state. */
  const mark = async (user: string, action: InboxAction, which: readonly string[] | "all"): Promise<number> => {
    const r = await inbox.mark(user, action, which);
    if (r.changed.length > 0) {
      await broadcast(user, { t: "state", ids: which === "all" ? [] : r.changed, all: which === "all", state: action === "archive" ? { archived: true } : { [action]: true }, unread: r.unread });
      if (action !== "archive") {
        const at = Date.now();
        await Promise.all(
          r.changed.map((nid) => {
            const rb: ReceiptBatch = { type: "receipts", nid, stage: "inbox", entries: [{ user, outcome: action, channel: "inapp", device: "inapp", at }] };
            return d.nats.js.publish(receiptSubject(nid), encode(rb), { msgID: MSGID.inboxAction(user, action, nid) });
          }),
        );
        // Reading an in-app item is opening the notification (counted once per recipient, whatever the channel).
        if (action === "read") await engagement.record(r.changed.map((nid) => ({ kind: "opened" as const, nid, user, channel: "inapp" as const, device: "inapp", at })));
      }
    }
    return r.unread;
  };

  const handleCommand = async (ws: WebSocket<Conn>, c: Command): Promise<void> => {
    const u = ws.getUserData();
    switch (c.t) {
      case "ping":
        return sendTo(ws, '{"t":"pong"}');
      case "ack": {
        const h = held.get(u.user);
        const m = h?.pending?.get(c.id);
        if (!m || !h) return;
        h.pending!.delete(c.id);
        if (m.reply && isInboxReply(m.reply)) m.respond(encodeJson({ ok: true, gateway, conn: u.id }));
        return;
      }
      case "list": {
        const r = await inbox.list(u.user, c.limit ?? w.syncItems, c.before);
        return sendTo(ws, { t: "inbox", ref: c.ref, items: r.items, unread: r.unread });
      }
      default: {
        const unread = await mark(u.user, c.t === "archive" ? "archive" : c.t, markTarget(c.t, c.ids, c.all));
        return sendTo(ws, { t: "ok", ref: c.ref, unread });
      }
    }
  };

  const app: TemplatedApp = uws.App();
  app.ws<Conn>("/v1/ws", {
    compression: uws.DISABLED,
    maxPayloadLength: w.maxMessageBytes,
    idleTimeout: w.idleTimeoutSec,
    sendPingsAutomatically: true,
    maxBackpressure: 1 << 20,
    closeOnBackpressureLimit: 1,
    upgrade: (res, req, context) => {
      // Refusals answer like any HTTP error (status and `{error}`), before any upgrade. Everything here runs in the
      // handler's own turn: the token is checked synchronously and the upgrade done at once, in the cork uWS holds for
      // the handler. Upgraded after an await instead (corked, as uWS asks there), about one connection in 11,000 of a
      // burst was closed right after it opened (docs/inapp.md).
      let t: { user: string; exp: number };
      try {
        origins.check(req.getHeader("origin"));
        t = tokens.verifyNow(userTokenOf(req));
      } catch (err) {
        return new Exchange(res).fail(err);
      }
      const conn: Conn = { user: t.user, id: nextId++, exp: t.exp, tokens: w.messagesPerSec * 2, at: Date.now() };
      res.upgrade(conn, req.getHeader("sec-websocket-key"), req.getHeader("sec-websocket-protocol"), req.getHeader("sec-websocket-extensions"), context);
    },
    open: (ws) => {
      const u = ws.getUserData();
      open++;
      let h = held.get(u.user);
      if (!h) {
        h = { conns: [], pending: null };
        held.set(u.user, h);
      }
      h.conns.push(ws);
      wsConnections.inc();
      // Presence names this gateway for the user from now on: live items for the user come on this gateway's subject.
      void presence.connected(u.user).catch((err) => log.warn({ err }, "presence write failed"));
      void inbox.list(u.user, w.syncItems).then(
        (r) => {
          if (held.get(u.user)?.conns.includes(ws)) sendTo(ws, { t: "hello", user: u.user, unread: r.unread, items: r.items, heartbeatMs: Math.floor((w.idleTimeoutSec * 1000) / 2) });
        },
        (err) => {
          // No hello without the inbox: close (1011) so the client reconnects rather than wait on a connection that says nothing.
          log.warn({ err, user: u.user }, "inbox read failed");
          if (held.get(u.user)?.conns.includes(ws)) ws.end(CLOSE_UNAVAILABLE, "inbox unavailable");
        },
      );
    },
    message: (ws, data) => {
      const u = ws.getUserData();
      const now = Date.now();
      u.tokens = Math.min(w.messagesPerSec * 2, u.tokens + ((now - u.at) / 1000) * w.messagesPerSec);
      u.at = now;
      if (u.tokens < 1) return ws.end(CLOSE_POLICY, "rate limit");
      u.tokens -= 1;
      let c: Command;
      let r: unknown;
      try {
        const parsed = command.safeParse(JSON.parse(Buffer.from(data).toString("utf8")));
        if (!parsed.success) throw invalidRequest(parsed.error.issues[0]);
        c = parsed.data;
        r = "ref" in c ? c.ref : undefined;
      } catch (err) {
        const e = err instanceof NfxError ? err : new RequestInvalid("(message): must be JSON", { field: "(message)" });
        return sendTo(ws, { t: "error", code: e.code, message: e.message, field: e.field });
      }
      handleCommand(ws, c).catch((err) => {
        if (held.get(u.user)?.conns.includes(ws)) sendTo(ws, { t: "error", ref: r, ...toErrorReply(err) });
      });
    },
    close: (ws) => {
      const u = ws.getUserData();
      open--;
      const h = held.get(u.user);
      if (!h) return;
      const i = h.conns.indexOf(ws);
      if (i >= 0) h.conns.splice(i, 1);
      wsConnections.dec();
      if (h.conns.length > 0) return;
      held.delete(u.user);
      presence.disconnected(u.user);
    },
  });

  mountInboxHttp(app, { tokens, inbox, mark, origins, defaultLimit: w.syncItems, maxBodyBytes: w.maxMessageBytes * 4, log });
  const client = webFile("nfx-client.js");
  const demo = webFile("demo.html");
  app.get("/v1/client.js", fixed({ "content-type": "text/javascript; charset=utf-8", "cache-control": "no-cache" }, () => client));
  app.get("/demo", fixed({ "content-type": "text/html; charset=utf-8" }, () => demo));
  app.get("/healthz", fixed({ "content-type": "application/json" }, () => JSON.stringify({ ok: true, gateway, connections: open, users: held.size })));
  app.any("/*", noRoute);

  // Token expiry: checked every few seconds rather than with a timer per connection.
  const expiry = setInterval(() => {
    const now = Date.now();
    for (const h of held.values()) for (const ws of h.conns) if (ws.getUserData().exp <= now) ws.end(CLOSE_EXPIRED, "token expired");
  }, 5000);
  expiry.unref();

  const listener = await listen(uws, app, w.host, w.port, "ws");
  const port = listener.port;
  log.info({ port }, "ws gateway ready");
  return {
    port,
    gateway,
    connections: () => open,
    async stop() {
      clearInterval(expiry);
      listener.close();
      for (const h of held.values()) for (const ws of h.conns) ws.end(1001, "gateway stopping");
      liveSub.unsubscribe();
      bcastSub.unsubscribe();
      held.clear();
      await presence.close();
    },
  };
}
