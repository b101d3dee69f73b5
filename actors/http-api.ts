// HTTP gateway of the ingest role, on uWebSockets.js: notifications, status and templates over HTTP, each route checking its API-key scope.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

import type { TemplatedApp } from "uWebSockets.js";

import type { Campaigns } from "../lib/campaign/campaigns.js";
import { ConsentHttp } from "../lib/consent/consent-http.js";
import type { Config } from "../lib/core/config.js";
import { BodyTooLarge, NotFound, RequestInvalid, Unauthenticated, UnsupportedMediaType } from "../lib/core/errors.js";
import { decodeBody } from "../lib/core/json-guard.js";
import type { Logger } from "../lib/core/log.js";
import type { Channel } from "../lib/core/subjects.js";
import { consentLog } from "../lib/directory/directory.js";
import { linkSignerFor, PIXEL_GIF } from "../lib/gateway/links.js";
import { UserTokens } from "../lib/inapp/ws-token.js";
import { type Answer, bearerOf, fixed, listen, noRoute, route as httpRoute } from "../lib/infra/http.js";
import type { Nats } from "../lib/infra/nats.js";
import { listProcesses } from "../lib/infra/processes.js";
import type { Redis } from "../lib/infra/redis.js";
import { requireNativeUws } from "../lib/infra/uws.js";
import { ApiKeys, NOBODY, requireScope, type Scope } from "../lib/intake/api-keys.js";
import type { Intake, Producer } from "../lib/intake/intake.js";
import { campaignOp, preferencesOp } from "../lib/intake/operations.js";
import type { TemplateStore } from "../lib/intake/templates.js";
import { endpointsOp, topicsOp } from "../lib/intake/topics-ops.js";
import { readDeliveryLog, readOverview } from "../lib/tracking/delivery-log.js";
import { engagementFor, reportEvents } from "../lib/tracking/engagement.js";
import { readStatus } from "../lib/tracking/status.js";
import { userLogFor } from "../lib/tracking/user-log.js";
import { Webhooks } from "../lib/tracking/webhooks.js";

export interface HttpApiDeps {
  cfg: Config;
  nats: Nats;
  redis: Redis;
  intake: Intake;
  templates: TemplateStore;
  campaigns: Campaigns;
  log: Logger;
}

/** What a route handler gets: headers read up front (uWS forbids touching `req` after the first await) and the body. */
interface Call {
  /** The API key's caller; for `auth: "none"` routes, and user-token callers, {@link NOBODY} (no scope). */
  caller: Producer;
  /** The user a user token authenticated (`auth: "key-or-user"` routes). */
  user?: string;
  params: string[];
  query: URLSearchParams;
  /** Path and query as requested (`/v1/webhooks/twilio?…`). */
  pathAndQuery: string;
  headers: { idempotencyKey: string; sgSignature: string; sgTimestamp: string; twilioSignature: string };
  body: Uint8Array;
}

/**
 * Who may call a route: an API key holding the route's scope; an API key with the scope or a user
 * token (apps reporting their own events); or anyone (signed links and provider webhooks check their own signatures).
 */
type Auth = "key" | "key-or-user" | "none";

/** A route's options: its name for errors (`POST /v1/campaigns/{id}/{action}`), how it authenticates, the scopes that admit a key (any of; `admin` always does). */
interface RouteOpts {
  what: string;
  params: number;
  body: boolean;
  auth?: Auth;
  /** Scopes admitting a key, fixed or from the path parameters; required unless `auth` is "none". */
  scope?: readonly Scope[] | ((params: string[]) => readonly Scope[]);
  ctype?: RegExp;
}

type Handler = (c: Call) => Promise<Answer>;

/**
 * Starts the HTTP API on `http.host:http.port` (port 0 picks one). Routes:
 * `POST /v1/notifications` (202 `{id}`), `GET /v1/notifications/{id}`,
 * `PUT|GET|DELETE /v1/templates/{id}`, `GET /v1/templates`, `GET /healthz`,
 * `GET /v1/openapi.yaml`, `GET /v1/campaigns/{id}`, `POST /v1/campaigns/{id}/{pause|resume|cancel}`,
 * `PATCH /v1/users/{id}/preferences`, delivery logs, overview, metrics targets, engagement and webhooks.
 * Every route but /healthz, the OpenAPI file, the status page, signed tracking links and signed
 * provider webhooks needs `Authorization: Bearer <api key>` (401 NFX_ERR_UNAUTHENTICATED without a
 * valid one) holding the route's scope (403 NFX_ERR_SCOPE_MISSING naming the scope and the key), checked
 * before the body is read; `POST /v1/events` also takes a user token for that user's own events. The
 * route → scope table is in docs/api.md ("API keys and scopes"). Errors answer with the error's HTTP
 * status and `{error:{code,message,field}}`. The OpenAPI description is openapi.yaml.
 */
export async function startHttpApi(d: HttpApiDeps): Promise<{ port: number; stop(): Promise<void> }> {
  const uws = requireNativeUws();
  const log = d.log.child({ actor: "http-api" });
  const max = d.cfg.ingest.maxBodyBytes;
  const depth = d.cfg.ingest.maxJsonDepth;
  const keys = new ApiKeys(d.cfg.apiKeys);

  const onInternal = (err: unknown): void => log.error({ err }, "request failed");

  /** Wraps a handler: auth and scope, content type, body size and reading, error mapping. A keyed route without a scope fails at start-up. */
  const route = (o: RouteOpts, h: Handler) => {
    if ((o.auth ?? "key") !== "none" && !o.scope) throw new Error(`${o.what}: a route that takes an API key must name its scope`);
    const mode = o.auth ?? "key";
    return httpRoute({
      onInternal,
      ...(o.body ? { body: { max, tooLarge: () => new BodyTooLarge(`(body): over the ${max}-byte limit`, { field: "(body)" }) } } : {}),
      prepare: (req) => {
        const raw = Array.from({ length: o.params }, (_, i) => req.getParameter(i) ?? "");
        const ctype = req.getHeader("content-type");
        const length = Number(req.getHeader("content-length") || 0);
        const idempotencyKey = req.getHeader("idempotency-key");
        const extra = { sgSignature: req.getHeader("x-twilio-email-event-webhook-signature"), sgTimestamp: req.getHeader("x-twilio-email-event-webhook-timestamp"), twilioSignature: req.getHeader("x-twilio-signature") };
        const q = req.getQuery() ?? "";
        const pathAndQuery = req.getUrl() + (q ? `?${q}` : "");
        const bearer = bearerOf(req.getHeader("authorization"));
        const keyCaller = keys.find(bearer);
        const caller = mode === "none" ? NOBODY : keyCaller;
        const params = raw.map((p) => {
          try {
            return decodeURIComponent(p);
          } catch {
            throw new RequestInvalid("path: malformed percent-encoding", { field: "path" });
          }
        });
        if (!caller && mode !== "key-or-user") throw new Unauthenticated("authorization: a valid `Bearer <api key>` header is required", { field: "authorization" });
        if (!caller && !bearer) throw new Unauthenticated("authorization: a `Bearer <api key or user token>` header is required", { field: "authorization" });
        // A key is checked against the route's scope before anything else happens; a user token (key-or-user) has its own rule in the handler.
        if (mode !== "none" && caller) requireScope(caller, typeof o.scope === "function" ? o.scope(params) : o.scope!, { field: "authorization", what: o.what });
        const want = o.ctype ?? /^application\/json\b/i;
        if (o.body && !want.test(ctype)) throw new UnsupportedMediaType(`content-type: must be ${o.ctype ? "application/x-www-form-urlencoded" : "application/json"}`, { field: "content-type" });
        if (length > max) throw new BodyTooLarge(`(body): ${length} bytes is over the ${max}-byte limit`, { field: "(body)" });
        return { caller, bearer, params, q, pathAndQuery, headers: { idempotencyKey, ...extra } };
      },
      run: ({ caller, bearer, params, q, pathAndQuery, headers }, body) => {
        const who = caller ? Promise.resolve({ caller, user: undefined }) : tokens.verify(bearer).then((t) => ({ caller: NOBODY, user: t.user }));
        return who.then((w) => h({ caller: w.caller, ...(w.user ? { user: w.user } : {}), params, query: new URLSearchParams(q), pathAndQuery, headers, body }));
      },
    });
  };

  const tokens = new UserTokens(d.cfg.ws.secret, d.cfg.ws.issuer);
  const engagement = engagementFor(d.cfg, d.nats, d.redis);
  const links = linkSignerFor(d.cfg);
  const webhooks = new Webhooks(d.cfg, d.redis, engagement);
  const userLog = userLogFor(d.cfg, d.redis);
  const statusPage = readFileSync(fileURLToPath(new URL("../../web/status.html", import.meta.url)));

  const app: TemplatedApp = uws.App();
  app.post(
    "/v1/notifications",
    route({ what: "POST /v1/notifications", scope: ["send", "campaigns.create"], params: 0, body: true }, async (c) => {
      const body = decodeBody(c.body, max, depth);
      if (c.headers.idempotencyKey && body && typeof body === "object" && !Array.isArray(body)) {
        const b = body as Record<string, unknown>;
        if (b.idempotencyKey !== undefined && b.idempotencyKey !== c.headers.idempotencyKey) {
          throw new RequestInvalid("idempotencyKey: differs from the Idempotency-Key header", { field: "idempotencyKey" });
        }
        b.idempotencyKey = c.headers.idempotencyKey;
      }
      const r = await d.intake.accept(body, c.caller);
      return { status: 202, body: { id: r.id }, headers: r.replayed ? { "idempotent-replayed": "true" } : undefined };
    }),
  );
  app.get("/v1/notifications/:id", route({ what: "GET /v1/notifications/{id}", scope: ["read"], params: 1, body: false }, async (c) => ({ status: 200, body: await readStatus(d.nats, c.params[0], d.campaigns) })));
  app.put(
    "/v1/templates/:id",
    route({ what: "PUT /v1/templates/{id}", scope: ["templates"], params: 1, body: true }, async (c) => {
      const body = decodeBody(c.body, max, depth) as Record<string, unknown> | null;
      if (!body || typeof body !== "object" || Array.isArray(body)) throw new RequestInvalid("(body): must be a JSON object", { field: "(body)" });
      if (body.id !== undefined && body.id !== c.params[0]) throw new RequestInvalid("id: differs from the id in the path", { field: "id" });
      return { status: 200, body: await d.templates.put({ ...body, id: c.params[0] }) };
    }),
  );
  app.get(
    "/v1/templates/:id",
    route({ what: "GET /v1/templates/{id}", scope: ["templates", "read"], params: 1, body: false }, async (c) => {
      const t = await d.templates.get(c.params[0]);
      if (!t) throw new NotFound(`template ${c.params[0]} not found`, { field: "id" });
      return { status: 200, body: t };
    }),
  );
  app.get("/v1/templates", route({ what: "GET /v1/templates", scope: ["templates", "read"], params: 0, body: false }, async () => ({ status: 200, body: { templates: await d.templates.list() } })));
  app.del(
    "/v1/templates/:id",
    route({ what: "DELETE /v1/templates/{id}", scope: ["templates"], params: 1, body: false }, async (c) => {
      await d.templates.delete(c.params[0]);
      return { status: 204, body: undefined };
    }),
  );
  app.get("/v1/campaigns/:id", route({ what: "GET /v1/campaigns/{id}", scope: ["read"], params: 1, body: false }, async (c) => ({ status: 200, body: await campaignOp(d.campaigns, c.params[0], "status") })));
  app.post("/v1/campaigns/:id/:action", route({ what: "POST /v1/campaigns/{id}/{action}", scope: (p) => (p[1] === "status" ? ["read"] : ["campaigns.control"]), params: 2, body: false }, async (c) => ({ status: 200, body: await campaignOp(d.campaigns, c.params[0], c.params[1]) })));
  app.patch(
    "/v1/users/:id/preferences",
    route({ what: "PATCH /v1/users/{id}/preferences", scope: ["users.write"], params: 1, body: true }, async (c) => ({ status: 200, body: { preferences: (await preferencesOp(d.cfg, d.redis, d.nats.nc, c.params[0], decodeBody(c.body, max, depth), { via: "api_key", name: c.caller.name })).preferences ?? {} } })),
  );
  // Topics and webhook endpoints (lib/intake/topics-ops.ts validates every body; path parameters win over nothing: a body naming another is refused).
  const withPath = (raw: Uint8Array, path: Record<string, unknown>): Record<string, unknown> => {
    const body = raw.length ? decodeBody(raw, max, depth) : {};
    if (!body || typeof body !== "object" || Array.isArray(body)) throw new RequestInvalid("(body): must be a JSON object", { field: "(body)" });
    const b = body as Record<string, unknown>;
    for (const [k, v] of Object.entries(path)) {
      if (k !== "action" && b[k] !== undefined && b[k] !== v) throw new RequestInvalid(`${k}: differs from the ${k} in the path`, { field: k });
      if (k === "action" && b.action !== undefined) throw new RequestInvalid("action: comes from the method and path", { field: "action" });
    }
    return { ...b, ...path };
  };
  const READ_TOPICS: Scope[] = ["topics", "read"];
  app.get("/v1/topics", route({ what: "GET /v1/topics", scope: READ_TOPICS, params: 0, body: false }, async () => ({ status: 200, body: await topicsOp(d.cfg, d.redis, { action: "list" }) })));
  app.put("/v1/topics/:name", route({ what: "PUT /v1/topics/{name}", scope: ["topics"], params: 1, body: true }, async (c) => ({ status: 200, body: await topicsOp(d.cfg, d.redis, withPath(c.body, { action: "put", name: c.params[0] })) })));
  app.get("/v1/topics/:name", route({ what: "GET /v1/topics/{name}", scope: READ_TOPICS, params: 1, body: false }, async (c) => ({ status: 200, body: await topicsOp(d.cfg, d.redis, { action: "get", name: c.params[0] }) })));
  app.del("/v1/topics/:name", route({ what: "DELETE /v1/topics/{name}", scope: ["topics"], params: 1, body: false }, async (c) => (await topicsOp(d.cfg, d.redis, { action: "delete", name: c.params[0] }), { status: 204, body: undefined })));
  app.post("/v1/topics/:name/subscribers", route({ what: "POST /v1/topics/{name}/subscribers", scope: ["topics"], params: 1, body: true }, async (c) => ({ status: 200, body: await topicsOp(d.cfg, d.redis, withPath(c.body, { action: "subscribe", name: c.params[0] })) })));
  app.post("/v1/topics/:name/unsubscribe", route({ what: "POST /v1/topics/{name}/unsubscribe", scope: ["topics"], params: 1, body: true }, async (c) => ({ status: 200, body: await topicsOp(d.cfg, d.redis, withPath(c.body, { action: "unsubscribe", name: c.params[0] })) })));
  app.post("/v1/endpoints", route({ what: "POST /v1/endpoints", scope: ["topics"], params: 0, body: true }, async (c) => ({ status: 201, body: await endpointsOp(d.cfg, d.redis, withPath(c.body, { action: "create" })) })));
  app.get("/v1/endpoints", route({ what: "GET /v1/endpoints", scope: READ_TOPICS, params: 0, body: false }, async () => ({ status: 200, body: await endpointsOp(d.cfg, d.redis, { action: "list" }) })));
  app.get("/v1/endpoints/:id", route({ what: "GET /v1/endpoints/{id}", scope: READ_TOPICS, params: 1, body: false }, async (c) => ({ status: 200, body: await endpointsOp(d.cfg, d.redis, { action: "get", id: c.params[0] }) })));
  app.patch("/v1/endpoints/:id", route({ what: "PATCH /v1/endpoints/{id}", scope: ["topics"], params: 1, body: true }, async (c) => ({ status: 200, body: await endpointsOp(d.cfg, d.redis, withPath(c.body, { action: "update", id: c.params[0] })) })));
  app.del("/v1/endpoints/:id", route({ what: "DELETE /v1/endpoints/{id}", scope: ["topics"], params: 1, body: false }, async (c) => (await endpointsOp(d.cfg, d.redis, { action: "delete", id: c.params[0] }), { status: 204, body: undefined })));
  app.get("/v1/endpoints/:id/state", route({ what: "GET /v1/endpoints/{id}/state", scope: READ_TOPICS, params: 1, body: false }, async (c) => ({ status: 200, body: await endpointsOp(d.cfg, d.redis, { action: "state", id: c.params[0] }) })));
  app.get(
    "/v1/endpoints/:id/deliveries",
    route({ what: "GET /v1/endpoints/{id}/deliveries", scope: READ_TOPICS, params: 1, body: false }, async (c) => {
      const limit = c.query.get("limit");
      if (limit !== null && !/^\d+$/.test(limit)) throw new RequestInvalid("limit: must be a whole number", { field: "limit" });
      return { status: 200, body: await endpointsOp(d.cfg, d.redis, { action: "deliveries", id: c.params[0], ...(limit !== null ? { limit: Number(limit) } : {}) }) };
    }),
  );
  app.post(
    "/v1/endpoints/:id/:action",
    route({ what: "POST /v1/endpoints/{id}/{rotate-secret|pause|resume}", scope: ["topics"], params: 2, body: false }, async (c) => {
      const action = ({ "rotate-secret": "rotate", pause: "pause", resume: "resume" } as Record<string, string>)[c.params[1]];
      if (!action) throw new NotFound(`POST /v1/endpoints/{id}/${c.params[1]}: no such action (rotate-secret, pause, resume)`, { field: "action" });
      return { status: 200, body: await endpointsOp(d.cfg, d.redis, { action, id: c.params[0] }) };
    }),
  );
  // Engagement: the open pixel always answers the image (a broken or forged link just counts nothing); a click on a bad link gets a plain page.
  app.get(
    "/v1/t/o/:token",
    route({ what: "GET /v1/t/o/{token}", params: 1, body: false, auth: "none" }, async (c) => {
      const claims = (() => {
        try {
          return links.verify(c.params[0], "o");
        } catch {
          return null;
        }
      })();
      if (claims) await engagement.record([{ kind: "opened", nid: claims.nid, user: claims.user, channel: claims.channel as Channel, device: claims.device, at: Date.now() }]).catch((err) => log.warn({ err }, "open not recorded"));
      return { status: 200, raw: PIXEL_GIF, headers: { "content-type": "image/gif", "cache-control": "no-store, max-age=0" } };
    }),
  );
  app.get(
    "/v1/t/c/:token",
    route({ what: "GET /v1/t/c/{token}", params: 1, body: false, auth: "none" }, async (c): Promise<{ status: number; raw: string; headers: Record<string, string> }> => {
      let claims;
      try {
        claims = links.verify(c.params[0], "c");
      } catch (err) {
        return { status: 400, raw: `This link is not valid (${(err as Error).message}).\n`, headers: { "content-type": "text/plain; charset=utf-8" } };
      }
      await engagement.record([{ kind: "clicked", nid: claims.nid, user: claims.user, channel: claims.channel as Channel, device: claims.device, at: Date.now() }]).catch((err) => log.warn({ err }, "click not recorded"));
      return { status: 302, raw: "", headers: { location: claims.url!, "cache-control": "no-store" } };
    }),
  );
  app.post("/v1/events", route({ what: "POST /v1/events", scope: ["events"], params: 0, body: true, auth: "key-or-user" }, async (c) => ({ status: 200, body: await reportEvents(engagement, decodeBody(c.body, max, depth), c.user) })));
  app.post(
    "/v1/webhooks/sendgrid",
    route({ what: "POST /v1/webhooks/sendgrid", params: 0, body: true, auth: "none" }, async (c) => ({
      status: 200,
      body: await webhooks.sendgrid(Buffer.from(c.body), { signature: c.headers.sgSignature, timestamp: c.headers.sgTimestamp }),
    })),
  );
  app.post(
    "/v1/webhooks/twilio",
    route({ what: "POST /v1/webhooks/twilio", params: 0, body: true, auth: "none", ctype: /^application\/x-www-form-urlencoded\b/i }, async (c) => {
      const form = Object.fromEntries(new URLSearchParams(Buffer.from(c.body).toString("utf8")));
      return { status: 200, body: await webhooks.twilio(c.pathAndQuery, form, c.headers.twilioSignature) };
    }),
  );
  // Consent: signed links (no key: the link is the credential), the preferences of a user token, Twilio's inbound messages.
  const consent = new ConsentHttp({ cfg: d.cfg, redis: d.redis, nc: d.nats.nc });
  const FORM = /^(application\/x-www-form-urlencoded|multipart\/form-data)\b/i;
  app.get("/v1/consent/u/:token", route({ what: "GET /v1/consent/u/{token}", params: 1, body: false, auth: "none" }, (c) => consent.get(c.params[0])));
  app.get("/v1/consent/p/:token", route({ what: "GET /v1/consent/p/{token}", params: 1, body: false, auth: "none" }, (c) => consent.get(c.params[0])));
  app.post("/v1/consent/u/:token", route({ what: "POST /v1/consent/u/{token}", params: 1, body: true, auth: "none", ctype: FORM }, (c) => consent.oneClick(c.params[0], Buffer.from(c.body).toString("utf8"))));
  app.post("/v1/consent/p/:token", route({ what: "POST /v1/consent/p/{token}", params: 1, body: true, auth: "none", ctype: FORM }, (c) => consent.save(c.params[0], Buffer.from(c.body).toString("utf8"))));
  app.get("/v1/preferences", route({ what: "GET /v1/preferences", scope: ["users.write"], params: 0, body: false, auth: "key-or-user" }, async (c) => ({ status: 200, body: await consent.mine(c.user) })));
  app.patch("/v1/preferences", route({ what: "PATCH /v1/preferences", scope: ["users.write"], params: 0, body: true, auth: "key-or-user" }, async (c) => ({ status: 200, body: await consent.patchMine(c.user, decodeBody(c.body, max, depth)) })));
  app.get("/v1/users/:id/consent", route({ what: "GET /v1/users/{id}/consent", scope: ["read"], params: 1, body: false }, async (c) => ({ status: 200, body: { user: c.params[0], entries: await consentLog(d.redis, d.cfg.cluster.shards, c.params[0]) } })));
  app.post(
    "/v1/webhooks/twilio/inbound",
    route({ what: "POST /v1/webhooks/twilio/inbound", params: 0, body: true, auth: "none", ctype: /^application\/x-www-form-urlencoded\b/i }, (c) =>
      consent.inbound(c.pathAndQuery, Object.fromEntries(new URLSearchParams(Buffer.from(c.body).toString("utf8"))), c.headers.twilioSignature),
    ),
  );
  // Delivery logs and the overview.
  app.get("/v1/notifications/:id/deliveries", route({ what: "GET /v1/notifications/{id}/deliveries", scope: ["read"], params: 1, body: false }, async (c) => ({ status: 200, body: await readDeliveryLog(d.nats, userLog, { ...Object.fromEntries(c.query), notification: c.params[0] }) })));
  app.get("/v1/users/:id/deliveries", route({ what: "GET /v1/users/{id}/deliveries", scope: ["read"], params: 1, body: false }, async (c) => ({ status: 200, body: await readDeliveryLog(d.nats, userLog, { ...Object.fromEntries(c.query), user: c.params[0] }) })));
  app.get("/v1/overview", route({ what: "GET /v1/overview", scope: ["read"], params: 0, body: false }, async () => ({ status: 200, body: await readOverview(d.nats, d.campaigns) })));
  app.get(
    "/v1/metrics/targets",
    route({ what: "GET /v1/metrics/targets", scope: ["read"], params: 0, body: false }, async () => ({
      status: 200,
      // Prometheus http_sd_config format: one target group per process.
      body: (await listProcesses(d.nats)).filter((p) => p.metricsUrl).map((p) => {
        const u = new URL(p.metricsUrl!);
        return { targets: [u.host], labels: { __metrics_path__: u.pathname, role: p.roles.join("+"), host: p.host, pid: String(p.pid) } };
      }),
    })),
  );
  app.get("/status", fixed({ "content-type": "text/html; charset=utf-8", "cache-control": "no-store" }, () => statusPage));
  const openapi = readFileSync(fileURLToPath(new URL("../../openapi.yaml", import.meta.url)));
  app.get("/v1/openapi.yaml", fixed({ "content-type": "application/yaml" }, () => openapi));
  app.get("/healthz", fixed({ "content-type": "application/json" }, () => '{"ok":true}'));
  app.any("/*", noRoute);

  const listener = await listen(uws, app, d.cfg.http.host, d.cfg.http.port, "http");
  const port = listener.port;
  log.info({ port, keys: keys.size }, "http api ready");
  return {
    port,
    stop() {
      listener.close();
      return Promise.resolve();
    },
  };
}
