// WebSocket gateway on uWebSockets.js: holds users' live connections at /v1/ws, subscribes `nfx.live.<user>` for each user it holds, keeps presence, serves the inbox API, the browser client and the demo page.
import { wsConnections } from "../lib/infra/metrics.js";
import { engagementFor } from "../lib/tracking/engagement.js";
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { hostname } from "node:os";
import { STATUS_CODES } from "node:http";
import { fileURLToPath } from "node:url";
import type { Msg, Subscription } from "@nats-io/transport-node";
import type { HttpRequest, HttpResponse, TemplatedApp, WebSocket, us_listen_socket } from "uWebSockets.js";
import { z } from "zod";
import { encode, encodeJson } from "../lib/core/codec.js";
import type { Config } from "../lib/core/config.js";
import { BodyTooLarge, Forbidden, NfxError, NotFound, RequestInvalid, Unauthenticated, toErrorReply } from "../lib/core/errors.js";
import { INBOX_ACTIONS, Inbox, type InboxAction } from "../lib/inapp/inbox.js";
import type { Logger } from "../lib/core/log.js";
import type { Nats } from "../lib/infra/nats.js";
import { PresenceWriter } from "../lib/inapp/presence.js";
import type { Redis } from "../lib/infra/redis.js";
import { MSGID, isInboxReply, liveSubject, receiptSubject } from "../lib/core/subjects.js";
import type { ReceiptBatch } from "../lib/core/types.js";
import { requireNativeUws } from "../lib/infra/uws.js";
import { UserTokens } from "../lib/inapp/ws-token.js";
import { formatIssue } from "../lib/core/zod-issues.js";

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

/** The connections of one user held here, their live subscription, and offers waiting for a client's ack. */
interface Held {
  conns: Set<WebSocket<Conn>>;
  sub: Subscription;
  pending: Map<string, Msg> | null;
}

/** Client commands, validated before anything changes. */
const ids = z.array(z.string().regex(/^[A-Za-z0-9_\-:@+=]{1,128}$/, "must be notification ids")).min(1).max(1000);
const ref = z.union([z.string().max(64), z.number()]).optional();
const command = z.discriminatedUnion("t", [
  z.strictObject({ t: z.literal("ack"), id: z.string().min(1).max(128) }),
  z.strictObject({ t: z.literal("ping") }),
  z.strictObject({ t: z.enum(["seen", "read", "archive"]), ids: ids.optional(), all: z.literal(true).optional(), ref }),
  z.strictObject({ t: z.literal("list"), before: z.number().int().min(0).optional(), limit: z.number().int().min(1).max(200).optional(), ref }),
]);
type Command = z.infer<typeof command>;
const markBody = z.strictObject({ ids: ids.optional(), all: z.literal(true).optional() });

/** Close codes: 1008 policy (rate limit, bad frames), 4401 token expired. */
const CLOSE_POLICY = 1008;
const CLOSE_EXPIRED = 4401;

/** The first problem of a command or body as a {@link RequestInvalid} naming the field and the rule. */
const invalid = (issue: z.core.$ZodIssue): RequestInvalid => {
  const f = formatIssue(issue);
  return new RequestInvalid(`${f.field || "(message)"}: ${f.message}`, { field: f.field || "(message)" });
};
const statusLine = (code: number): string => `${code} ${STATUS_CODES[code] ?? ""}`;
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
  const inbox = new Inbox(d.redis, { shards: d.cfg.cluster.shards, cap: w.inboxCap, retentionMs: w.inboxRetentionDays * 86_400_000 });
  const engagement = engagementFor(d.cfg, d.nats, d.redis);
  const presence = new PresenceWriter({ nats: d.nats, redis: d.redis, log, shards: d.cfg.cluster.shards, gateway, ttlMs: w.presenceTtlSec * 1000 });
  const held = new Map<string, Held>();
  const anyOrigin = w.origins.includes("*");
  const origins = new Set(w.origins);
  let nextId = 1;
  let open = 0;

  const originAllowed = (origin: string): boolean => anyOrigin || origins.has(origin);
  /** Throws {@link Forbidden} unless `origin` may connect. */
  const checkOrigin = (origin: string): void => {
    if (!origin) {
      if (!w.allowNoOrigin) throw new Forbidden("origin: required", { field: "origin" });
      return;
    }
    if (!originAllowed(origin)) throw new Forbidden(`origin: ${origin} is not allowed`, { field: "origin" });
  };

  const sendTo = (ws: WebSocket<Conn>, msg: unknown): void => {
    ws.send(typeof msg === "string" ? msg : JSON.stringify(msg), false);
  };

  /** Delivers a message of `nfx.live.<user>` to every connection of the user here: an offer (remembered until a client acks) or a state change. */
  const onLive = (user: string, m: Msg): void => {
    const h = held.get(user);
    if (!h) return;
    const text = m.string();
    if (m.reply) {
      const id = (JSON.parse(text) as { id?: string }).id;
      if (!id) return;
      (h.pending ??= new Map()).set(id, m);
      setTimeout(() => h.pending?.delete(id), w.ackTimeoutMs + 1000).unref();
    }
    for (const ws of h.conns) ws.send(text, false);
  };

  /** Publishes a change to every connection of the user on every gateway (this one included, through its own subscription). */
  const broadcast = (user: string, msg: unknown): void => d.nats.nc.publish(liveSubject(user), encodeJson(msg));

  /** Applies an inbox action; read and seen become receipts; every connection of the user learns the new state. */
  const mark = async (user: string, action: InboxAction, which: readonly string[] | "all"): Promise<number> => {
    const r = await inbox.mark(user, action, which);
    if (r.changed.length > 0) {
      broadcast(user, { t: "state", ids: which === "all" ? [] : r.changed, all: which === "all", state: action === "archive" ? { archived: true } : { [action]: true }, unread: r.unread });
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
        if (!c.all && !c.ids) throw new RequestInvalid("ids: required unless all is true", { field: "ids" });
        if (c.all && c.t !== "read") throw new RequestInvalid("all: only read may apply to all items", { field: "all" });
        const unread = await mark(u.user, c.t === "archive" ? "archive" : c.t, c.all ? "all" : c.ids!);
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
      const state = { aborted: false };
      res.onAborted(() => void (state.aborted = true));
      const key = req.getHeader("sec-websocket-key");
      const proto = req.getHeader("sec-websocket-protocol");
      const ext = req.getHeader("sec-websocket-extensions");
      const origin = req.getHeader("origin");
      const bearer = /^Bearer (.+)$/i.exec(req.getHeader("authorization"))?.[1];
      const token = bearer ?? new URLSearchParams(req.getQuery() ?? "").get("token");
      const refuse = (err: unknown): void => {
        if (state.aborted) return;
        const status = err instanceof NfxError ? err.status : 500;
        res.cork(() => res.writeStatus(statusLine(status)).writeHeader("content-type", "application/json").end(JSON.stringify({ error: toErrorReply(err) })));
      };
      try {
        checkOrigin(origin);
      } catch (err) {
        return refuse(err);
      }
      tokens.verify(token).then(
        (t) => {
          if (state.aborted) return;
          const conn: Conn = { user: t.user, id: nextId++, exp: t.exp, tokens: w.messagesPerSec * 2, at: Date.now() };
          res.cork(() => res.upgrade(conn, key, proto, ext, context));
        },
        refuse,
      );
    },
    open: (ws) => {
      const u = ws.getUserData();
      open++;
      let h = held.get(u.user);
      if (!h) {
        const user = u.user;
        h = { conns: new Set(), sub: d.nats.nc.subscribe(liveSubject(user), { callback: (err, m) => void (err ? undefined : onLive(user, m)) }), pending: null };
        held.set(user, h);
      }
      h.conns.add(ws);
      wsConnections.inc();
      // Presence is written once the subscription is registered with the server (PresenceWriter flushes NATS first), so routing never sees a user nobody can reach.
      void presence.connected(u.user).catch((err) => log.warn({ err }, "presence write failed"));
      void inbox.list(u.user, w.syncItems).then(
        (r) => {
          if (held.get(u.user)?.conns.has(ws)) sendTo(ws, { t: "hello", user: u.user, unread: r.unread, items: r.items, heartbeatMs: Math.floor((w.idleTimeoutSec * 1000) / 2) });
        },
        (err) => log.warn({ err, user: u.user }, "inbox read failed"),
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
        if (!parsed.success) throw invalid(parsed.error.issues[0]!);
        c = parsed.data;
        r = "ref" in c ? c.ref : undefined;
      } catch (err) {
        const e = err instanceof NfxError ? err : new RequestInvalid("(message): must be JSON", { field: "(message)" });
        return sendTo(ws, { t: "error", code: e.code, message: e.message, field: e.field });
      }
      handleCommand(ws, c).catch((err) => {
        if (held.get(u.user)?.conns.has(ws)) sendTo(ws, { t: "error", ref: r, ...toErrorReply(err) });
      });
    },
    close: (ws) => {
      const u = ws.getUserData();
      open--;
      const h = held.get(u.user);
      if (!h) return;
      h.conns.delete(ws);
      wsConnections.dec();
      if (h.conns.size > 0) return;
      held.delete(u.user);
      h.sub.unsubscribe();
      presence.disconnected(u.user);
    },
  });

  /** Reads the user of an HTTP request: `Authorization: Bearer <user token>` or `?token=`. */
  const userOf = (req: HttpRequest): Promise<{ user: string }> =>
    tokens.verify(/^Bearer (.+)$/i.exec(req.getHeader("authorization"))?.[1] ?? new URLSearchParams(req.getQuery() ?? "").get("token"));

  const reply = (res: HttpResponse, st: { done: boolean }, origin: string, status: number, body: unknown): void => {
    if (st.done) return;
    st.done = true;
    res.cork(() => {
      res.writeStatus(statusLine(status)).writeHeader("content-type", "application/json");
      if (origin && originAllowed(origin)) res.writeHeader("access-control-allow-origin", origin).writeHeader("vary", "origin");
      res.end(JSON.stringify(body));
    });
  };
  const fail = (res: HttpResponse, st: { done: boolean }, origin: string, err: unknown): void => {
    if (!(err instanceof NfxError)) log.error({ err }, "inbox request failed");
    reply(res, st, origin, err instanceof NfxError ? err.status : 500, { error: toErrorReply(err) });
  };

  app.get("/v1/inbox", (res, req) => {
    const st = { done: false };
    res.onAborted(() => void (st.done = true));
    const origin = req.getHeader("origin");
    const q = new URLSearchParams(req.getQuery() ?? "");
    const limit = q.has("limit") ? Number(q.get("limit")) : w.syncItems;
    const before = q.has("before") ? Number(q.get("before")) : undefined;
    userOf(req)
      .then(async ({ user }) => {
        if (!Number.isInteger(limit) || limit < 1 || limit > 200) throw new RequestInvalid("limit: must be an integer from 1 to 200", { field: "limit" });
        if (before !== undefined && !(Number.isFinite(before) && before >= 0)) throw new RequestInvalid("before: must be a time in epoch milliseconds", { field: "before" });
        reply(res, st, origin, 200, await inbox.list(user, limit, before));
      })
      .catch((err) => fail(res, st, origin, err));
  });
  app.post("/v1/inbox/:action", (res, req) => {
    const st = { done: false };
    res.onAborted(() => void (st.done = true));
    const origin = req.getHeader("origin");
    const action = req.getParameter(0) ?? "";
    const who = userOf(req);
    who.catch(() => undefined);
    const chunks: Buffer[] = [];
    let size = 0;
    res.onData((ab, last) => {
      size += ab.byteLength;
      if (size > w.maxMessageBytes * 4) return fail(res, st, origin, new BodyTooLarge(`(body): over ${w.maxMessageBytes * 4} bytes`, { field: "(body)" }));
      chunks.push(Buffer.from(ab.slice(0)));
      if (!last) return;
      who
        .then(async ({ user }) => {
          if (!(INBOX_ACTIONS as readonly string[]).includes(action)) throw new NotFound(`action: must be one of ${INBOX_ACTIONS.join(", ")}`, { field: "action" });
          let body: unknown;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString("utf8") || "{}");
          } catch {
            throw new RequestInvalid("(body): must be JSON", { field: "(body)" });
          }
          const p = markBody.safeParse(body);
          if (!p.success) throw invalid(p.error.issues[0]!);
          if (!p.data.all && !p.data.ids) throw new RequestInvalid("ids: required unless all is true", { field: "ids" });
          if (p.data.all && action !== "read") throw new RequestInvalid("all: only read may apply to all items", { field: "all" });
          reply(res, st, origin, 200, { unread: await mark(user, action as InboxAction, p.data.all ? "all" : p.data.ids!) });
        })
        .catch((err) => fail(res, st, origin, err));
    });
  });
  app.options("/v1/inbox/*", (res, req) => {
    const origin = req.getHeader("origin");
    res.cork(() => {
      res.writeStatus("204 No Content");
      if (origin && originAllowed(origin)) {
        res.writeHeader("access-control-allow-origin", origin).writeHeader("access-control-allow-headers", "authorization, content-type").writeHeader("access-control-allow-methods", "GET, POST");
      }
      res.end();
    });
  });
  const client = webFile("nfx-client.js");
  const demo = webFile("demo.html");
  app.get("/v1/client.js", (res) => void res.cork(() => res.writeHeader("content-type", "text/javascript; charset=utf-8").writeHeader("cache-control", "no-cache").end(client)));
  app.get("/demo", (res) => void res.cork(() => res.writeHeader("content-type", "text/html; charset=utf-8").end(demo)));
  app.get("/healthz", (res) => void res.cork(() => res.writeHeader("content-type", "application/json").end(JSON.stringify({ ok: true, gateway, connections: open, users: held.size }))));
  app.any("/*", (res, req) => {
    const st = { done: false };
    reply(res, st, "", 404, { error: { code: "NFX_ERR_NOT_FOUND", message: `no route ${req.getMethod().toUpperCase()} ${req.getUrl()}` } });
  });

  // Token expiry: checked every few seconds rather than with a timer per connection.
  const expiry = setInterval(() => {
    const now = Date.now();
    for (const h of held.values()) for (const ws of h.conns) if (ws.getUserData().exp <= now) ws.end(CLOSE_EXPIRED, "token expired");
  }, 5000);
  expiry.unref();

  const socket = await new Promise<us_listen_socket>((resolve, reject) =>
    app.listen(w.host, w.port, (s) => (s ? resolve(s) : reject(new Error(`ws: cannot listen on ${w.host}:${w.port}`)))),
  );
  const port = uws.us_socket_local_port(socket as never);
  log.info({ port }, "ws gateway ready");
  return {
    port,
    gateway,
    connections: () => open,
    async stop() {
      clearInterval(expiry);
      uws.us_listen_socket_close(socket);
      for (const h of held.values()) for (const ws of h.conns) ws.end(1001, "gateway stopping");
      for (const h of held.values()) h.sub.unsubscribe();
      held.clear();
      await presence.close();
    },
  };
}
