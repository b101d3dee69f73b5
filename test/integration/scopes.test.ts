// API-key scopes: every HTTP route and every nfx.ext.api.* operation, called with a key holding each single scope; allowed exactly when the scope matches, and a refused write changes nothing.
import t, { type Test } from "tap";

import { type CampaignRecord, Campaigns } from "../../lib/campaign/campaigns.js";
import { TOPICS_KEY } from "../../lib/core/keys.js";
import { API, type ApiOp, BUCKET, STREAM } from "../../lib/core/subjects.js";
import { getUser, writeUsers } from "../../lib/directory/directory.js";
import { UserTokens } from "../../lib/inapp/ws-token.js";
import { API_KEY_HEADER, ApiError, callApi, callOp } from "../../lib/intake/api-client.js";
import { API_SCOPES, type Scope } from "../../lib/intake/api-keys.js";
import { clientsFor, producerFor, startTestCluster } from "../helpers/cluster.js";

const ADMIN = "scopes-admin-key-0123456789";
/** One key per scope, holding only that scope. */
const KEYS = API_SCOPES.map((scope) => ({ scope, name: `only-${scope}`, key: `scope-key-${scope}-0123456789`, scopes: [scope] }));

t.test("API-key scopes on every route and operation", async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest"],
    overrides: { apiKeys: [{ name: "ops", key: ADMIN, scopes: ["admin"] }, ...KEYS.map(({ name, key, scopes }) => ({ name, key, scopes }))] },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  // NATS operations go the way a producer's do: from account PRODUCERS through the service imports.
  const producer = await producerFor(t, cluster);
  const campaigns = new Campaigns(await nats.kvm.open(BUCKET.campaigns), await nats.kvm.open(BUCKET.counters));
  const templates = await nats.kvm.open(BUCKET.templates);

  const http = async (method: string, path: string, key: string | null, body?: unknown) => {
    const res = await fetch(`${cluster.httpUrl}${path}`, {
      method,
      headers: { ...(key === null ? {} : { authorization: `Bearer ${key}` }), ...(body === undefined ? {} : { "content-type": "application/json" }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });
    const text = await res.text();
    let json: { error?: { code: string; message: string; field?: string } } | undefined;
    try {
      json = text ? (JSON.parse(text) as { error?: { code: string; message: string; field?: string } }) : undefined;
    } catch {
      json = undefined;
    }
    return { status: res.status, json };
  };
  const admin = async (method: string, path: string, body?: unknown): Promise<void> => {
    const r = await http(method, path, ADMIN, body);
    if (r.status >= 300) throw new Error(`setup ${method} ${path}: ${r.status} ${JSON.stringify(r.json)}`);
  };

  // Fixtures: one user, one stored notification, one running campaign, one template.
  await writeUsers(redis, cfg.cluster.shards, [{ id: "ana", locale: "en", attributes: {}, devices: [{ id: "ana-phone", platform: "ios", token: "a-ana" }] }]);
  const push = { push: { title: "T", body: "B" } };
  const sent = await fetch(`${cluster.httpUrl}/v1/notifications`, {
    method: "POST", headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
    body: JSON.stringify({ recipients: ["ana"], category: "transactional", content: push }),
  });
  const nid = ((await sent.json()) as { id: string }).id;
  // The campaign record is seeded in its KV bucket as the campaign actor writes it (that role is not needed to test who may control it).
  const cid = "c_scopes";
  const now = Date.now();
  const rec: CampaignRecord = {
    id: cid, segment: "all", state: "running", createdAt: now, asOf: now, rate: 0, shards: 1, total: 0, updatedAt: now,
    brief: { id: cid, createdAt: now, expiresAt: now + 86_400_000, priority: "bulk", category: "marketing", channels: ["push"], content: push, segment: "all" },
  };
  await campaigns.create(rec);
  const tpl = { defaultLocale: "en", channels: { push: { en: { title: "Hi {{user.firstName}}", body: "b" } } } };
  await admin("PUT", "/v1/templates/keep", tpl);

  /** Everything a refused write could have changed: stored requests, the campaign, the user, the templates. */
  const snapshot = async () => ({
    intake: (await nats.jsm.streams.info(STREAM.intake)).state.messages,
    campaign: await campaigns.get(cid),
    user: await getUser(redis, cfg.cluster.shards, "ana"),
    topics: await redis.hkeys(TOPICS_KEY),
    templates: await (async () => {
      const out: Record<string, number> = {};
      for await (const k of await templates.keys()) out[k] = (await templates.get(k))!.revision;
      return out;
    })(),
  });

  let seq = 0;
  /**
   * One operation in the walk. `scopes`: the scopes that admit a key (admin always does). `call` runs it
   * with a key and answers `{ok, code, message}`; `undo` puts back what an allowed write changed;
   * `writes` marks a write whose refusal must leave the snapshot unchanged; `unseen` checks, after a
   * refusal, that the refused write left no trace the snapshot cannot see (engagement counts).
   */
  interface Case {
    name: string;
    scopes: readonly Scope[];
    writes: boolean;
    call(key: string | null, tag: string): Promise<{ ok: boolean; status?: number; code?: string; message?: string }>;
    undo?(): Promise<void>;
    unseen?(tag: string): Promise<void>;
  }

  const viaHttp = (method: string, path: (tag: string) => string, ok: number, body?: (tag: string) => unknown) => async (key: string | null, tag: string) => {
    const r = await http(method, path(tag), key, body?.(tag));
    return { ok: r.status === ok, status: r.status, code: r.json?.error?.code, message: r.json?.error?.message };
  };
  const viaNats = (op: ApiOp, body: (tag: string) => unknown) => async (key: string | null, tag: string) => {
    try {
      await callApi(producer, API[op], body(tag), key === null ? {} : { apiKey: key });
      return { ok: true };
    } catch (err) {
      if (!(err instanceof ApiError)) throw err;
      return { ok: false, code: err.code, message: err.message };
    }
  };
  const event = (tag: string) => ({ events: [{ type: "opened", notification: `n_ev_${tag}`, user: "ana" }] });
  /** A refused event report left no mark: reported now by the admin key, it counts as new. */
  const eventUncounted = async (tag: string): Promise<void> => {
    const r = await callApi<{ counted: number }>(nats.nc, API.events, event(tag));
    t.equal(r.counted, 1, `the refused event ${tag} was not counted`);
  };
  const resume = async (): Promise<void> => void (await campaigns.control(cid, "resume"));
  const optIn = async (): Promise<void> => admin("PATCH", "/v1/users/ana/preferences", { optedOut: false });
  const recipients = { recipients: ["ana"], category: "transactional", content: push };
  const segment = { segment: "all", category: "marketing", content: push };

  const HTTP: Case[] = [
    { name: "POST /v1/notifications (recipients)", scopes: ["send"], writes: true, call: viaHttp("POST", () => "/v1/notifications", 202, () => recipients) },
    { name: "POST /v1/notifications (segment)", scopes: ["campaigns.create"], writes: true, call: viaHttp("POST", () => "/v1/notifications", 202, () => segment) },
    { name: "GET /v1/notifications/{id}", scopes: ["read"], writes: false, call: viaHttp("GET", () => `/v1/notifications/${nid}`, 200) },
    { name: "GET /v1/notifications/{id}/deliveries", scopes: ["read"], writes: false, call: viaHttp("GET", () => `/v1/notifications/${nid}/deliveries`, 200) },
    { name: "GET /v1/users/{id}/deliveries", scopes: ["read"], writes: false, call: viaHttp("GET", () => "/v1/users/ana/deliveries", 200) },
    { name: "GET /v1/overview", scopes: ["read"], writes: false, call: viaHttp("GET", () => "/v1/overview", 200) },
    { name: "GET /v1/metrics/targets", scopes: ["read"], writes: false, call: viaHttp("GET", () => "/v1/metrics/targets", 200) },
    { name: "GET /v1/campaigns/{id}", scopes: ["read"], writes: false, call: viaHttp("GET", () => `/v1/campaigns/${cid}`, 200) },
    { name: "POST /v1/campaigns/{id}/status", scopes: ["read"], writes: false, call: viaHttp("POST", () => `/v1/campaigns/${cid}/status`, 200) },
    { name: "POST /v1/campaigns/{id}/pause", scopes: ["campaigns.control"], writes: true, call: viaHttp("POST", () => `/v1/campaigns/${cid}/pause`, 200), undo: resume },
    { name: "POST /v1/campaigns/{id}/cancel", scopes: ["campaigns.control"], writes: true, call: viaHttp("POST", () => "/v1/campaigns/c_missing/cancel", 404) },
    { name: "PATCH /v1/users/{id}/preferences", scopes: ["users.write"], writes: true, call: viaHttp("PATCH", () => "/v1/users/ana/preferences", 200, () => ({ optedOut: true })), undo: optIn },
    { name: "PUT /v1/templates/{id}", scopes: ["templates"], writes: true, call: viaHttp("PUT", (tag) => `/v1/templates/t_${tag}`, 200, () => tpl) },
    { name: "GET /v1/templates/{id}", scopes: ["templates", "read"], writes: false, call: viaHttp("GET", () => "/v1/templates/keep", 200) },
    { name: "GET /v1/templates", scopes: ["templates", "read"], writes: false, call: viaHttp("GET", () => "/v1/templates", 200) },
    { name: "DELETE /v1/templates/{id}", scopes: ["templates"], writes: true, call: viaHttp("DELETE", () => "/v1/templates/keep", 204), undo: () => admin("PUT", "/v1/templates/keep", tpl) },
    { name: "POST /v1/events", scopes: ["events"], writes: true, call: viaHttp("POST", () => "/v1/events", 200, event), unseen: eventUncounted },
    { name: "PUT /v1/topics/{name}", scopes: ["topics"], writes: true, call: viaHttp("PUT", (tag) => `/v1/topics/t-${tag.toLowerCase().replace(/[^a-z0-9]/g, "-")}`, 200, () => ({})) },
    { name: "GET /v1/topics", scopes: ["topics", "read"], writes: false, call: viaHttp("GET", () => "/v1/topics", 200) },
    { name: "GET /v1/endpoints", scopes: ["topics", "read"], writes: false, call: viaHttp("GET", () => "/v1/endpoints", 200) },
  ];
  const NATS: Case[] = [
    { name: "nfx.ext.api.notify (recipients)", scopes: ["send"], writes: true, call: viaNats("notify", () => recipients) },
    { name: "nfx.ext.api.notify (segment)", scopes: ["campaigns.create"], writes: true, call: viaNats("notify", () => segment) },
    { name: "nfx.ext.api.status", scopes: ["read"], writes: false, call: viaNats("status", () => ({ id: nid })) },
    { name: "nfx.ext.api.log", scopes: ["read"], writes: false, call: viaNats("log", () => ({ user: "ana" })) },
    { name: "nfx.ext.api.campaign (status)", scopes: ["read"], writes: false, call: viaNats("campaign", () => ({ id: cid, action: "status" })) },
    { name: "nfx.ext.api.campaign (pause)", scopes: ["campaigns.control"], writes: true, call: viaNats("campaign", () => ({ id: cid, action: "pause" })), undo: resume },
    { name: "nfx.ext.api.preferences", scopes: ["users.write"], writes: true, call: viaNats("preferences", () => ({ user: "ana", optedOut: true })), undo: optIn },
    { name: "nfx.ext.api.events", scopes: ["events"], writes: true, call: viaNats("events", event), unseen: eventUncounted },
    { name: "nfx.ext.api.topics (put)", scopes: ["topics"], writes: true, call: viaNats("topics", (tag) => ({ action: "put", name: `t-${tag.toLowerCase().replace(/[^a-z0-9]/g, "-")}` })) },
    { name: "nfx.ext.api.topics (list)", scopes: ["topics", "read"], writes: false, call: viaNats("topics", () => ({ action: "list" })) },
    { name: "nfx.ext.api.endpoints (list)", scopes: ["topics", "read"], writes: false, call: viaNats("endpoints", () => ({ action: "list" })) },
  ];

  const walk = async (t: Test, cases: Case[], authField: string): Promise<void> => {
    for (const c of cases) {
      const none = await c.call(null, `none${seq++}`);
      t.same([none.ok, none.code, none.status ?? 401], [false, "NFX_ERR_UNAUTHENTICATED", 401], `${c.name}: no key is refused as unauthenticated`);
      const unknown = await c.call("not-a-configured-key-0123456789", `unknown${seq++}`);
      t.equal(unknown.code, "NFX_ERR_UNAUTHENTICATED", `${c.name}: an unknown key is refused as unauthenticated`);
      for (const k of [{ scope: "admin" as Scope, name: "ops", key: ADMIN }, ...KEYS]) {
        const tag = `${k.name.replace(/\./g, "_")}_${seq++}`;
        const allowed = k.scope === "admin" || c.scopes.includes(k.scope);
        const before = c.writes && !allowed ? await snapshot() : null;
        const r = await c.call(k.key, tag);
        if (allowed) {
          t.ok(r.ok, `${c.name}: key ${k.name} is allowed${r.ok ? "" : ` (got ${r.status ?? ""} ${r.code}: ${r.message})`}`);
          await c.undo?.();
          continue;
        }
        t.same(
          [r.ok, r.status ?? 403, r.code],
          [false, 403, "NFX_ERR_SCOPE_MISSING"],
          `${c.name}: key ${k.name} is refused for lack of scope`,
        );
        // The message names the key and the scope the operation needs (one of them, for a route several admit).
        t.match(r.message ?? "", new RegExp(`^(${authField}|segment|recipients): key ${k.name.replace(/\./g, "\\.")} lacks scope [^,]*\\b(${c.scopes.map((s) => s.replace(/\./g, "\\.")).join("|")})\\b`), `${c.name}: the error names key ${k.name} and the scope needed`);
        if (before) t.same(await snapshot(), before, `${c.name}: refused for ${k.name}, nothing changed`);
        await c.unseen?.(tag);
      }
    }
  };

  await t.test("HTTP: each route admits exactly the keys holding its scope (or admin)", (t) => walk(t, HTTP, "authorization"));
  await t.test("NATS nfx.ext.api.*: each operation admits exactly the keys holding its scope (or admin)", (t) => walk(t, NATS, API_KEY_HEADER));

  await t.test("the trusted nfx.api.* family needs no key; the external one knows only the API's operations", async (t) => {
    const paused = await callApi<{ state: string }>(nats.nc, API.campaign, { id: cid, action: "pause" });
    t.equal(paused.state, "paused", "nfx's own users control campaigns on nfx.api.campaign without a key");
    await resume();
    const bogus = await callApi(nats.nc, "nfx.ext.api.bogus", {}, { apiKey: ADMIN }).then(() => null, (e: ApiError) => e);
    t.equal(bogus?.code, "NFX_ERR_NOT_FOUND", "an unknown operation on the external family is an error reply, not silence");
    const opKeyed = await callOp<{ id: string }>(nats.nc, "notify", recipients, { apiKey: KEYS.find((k) => k.scope === "send")!.key, ext: true });
    t.match(opKeyed.id, /^n_/, "callOp with an API key reaches the external family and sends as that key");
  });

  await t.test("routes with their own authentication answer the same with or without a key", async (t) => {
    const weakest = KEYS.find((k) => k.scope === "events")!.key;
    for (const [method, path, body] of [
      ["GET", "/healthz"], ["GET", "/v1/openapi.yaml"], ["GET", "/status"],
      ["GET", "/v1/t/o/not-a-token.gif"], ["GET", "/v1/t/c/not-a-token"],
      ["POST", "/v1/webhooks/sendgrid", []],
    ] as [string, string, unknown?][]) {
      const anon = await http(method, path, null, body);
      const keyed = await http(method, path, weakest, body);
      t.equal(keyed.status, anon.status, `${method} ${path}: ${anon.status} either way`);
      t.not(anon.json?.error?.code, "NFX_ERR_SCOPE_MISSING", `${method} ${path}: no scope asked`);
      t.not(anon.json?.error?.field, "authorization", `${method} ${path}: no API key asked (a webhook's own signature check may still refuse)`);
    }
    const own = await http("POST", "/v1/events", await new UserTokens(cfg.ws.secret, cfg.ws.issuer).mint("ana", 60), event(`own${seq++}`));
    t.equal(own.status, 200, "POST /v1/events takes a user token for the user's own events, no API key");
  });
});
