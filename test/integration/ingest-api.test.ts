// The ingest API on both surfaces (NATS request/reply and HTTP on uWS): every rule, auth, idempotency, templates, send-at, priority lanes.
import { connect } from "@nats-io/transport-node";
import t from "tap";

import { STREAM } from "../../lib/core/subjects.js";
import { writeUsers } from "../../lib/directory/directory.js";
import { ApiError, notify, status } from "../../lib/intake/api-client.js";
import { nfxRunner } from "../helpers/cli.js";
import { clientsFor, eventually, producerFor, startTestCluster } from "../helpers/cluster.js";

const ADMIN = "admin-key-0123456789";
const MARKETING = "marketing-key-0123456789";

t.test("ingest API", async (t) => {
  const cluster = await startTestCluster(t, {
    own: ["router"],
    overrides: {
      ingest: { maxBodyBytes: 200_000 },
      apiKeys: [
        { name: "admin", key: ADMIN, scopes: ["admin"] },
        { name: "marketing", key: MARKETING, scopes: ["send", "campaigns.create", "read"], categories: ["marketing"], priorities: ["normal", "bulk"] },
      ],
    },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  const stored = async (): Promise<number> => (await nats.jsm.streams.info(STREAM.intake)).state.messages;
  /** A reply as these tests read it: an id, a status's or template's fields, or an error (a field it lacks reads as undefined and fails its assertion). */
  type Reply = { id: string; priority?: string; category?: string; variables?: string[]; error: { code: string; field?: string; message: string } } & Record<string, unknown>;
  const post = async (path: string, body: unknown, o: { key?: string | null; type?: string; method?: string; headers?: Record<string, string> } = {}) => {
    const res = await fetch(`${cluster.httpUrl}${path}`, {
      method: o.method ?? "POST",
      headers: {
        ...(o.key === null ? {} : { authorization: `Bearer ${o.key ?? ADMIN}` }),
        "content-type": o.type ?? "application/json",
        ...o.headers,
      },
      body: typeof body === "string" ? body : JSON.stringify(body),
    });
    const text = await res.text();
    // An empty body reads as undefined, as the tests that look at such replies expect.
    return { status: res.status, headers: res.headers, json: (text ? JSON.parse(text) : undefined) as Reply };
  };
  const get = async (path: string, key = ADMIN) => {
    const res = await fetch(`${cluster.httpUrl}${path}`, { headers: { authorization: `Bearer ${key}` } });
    return { status: res.status, json: (await res.json()) as Reply };
  };
  await writeUsers(redis, cfg.cluster.shards, [
    { id: "ana", locale: "pt-BR", attributes: { firstName: "Ana" }, devices: [{ id: "ana-phone", platform: "android", token: "f-ana" }] },
    { id: "ben", locale: "de-DE", attributes: { firstName: "Ben" }, devices: [{ id: "ben-phone", platform: "ios", token: "a-ben" }] },
    { id: "kai", locale: "ja-JP", attributes: { firstName: "Kai" }, devices: [{ id: "kai-phone", platform: "ios", token: "a-kai" }] },
  ]);
  const ok = { recipients: ["ana"], category: "transactional", content: { push: { title: "T", body: "B" } } };

  await t.test("templates over HTTP: stored with the variables they need; bad ones refused", async (t) => {
    const tpl = {
      defaultLocale: "en",
      channels: {
        push: {
          en: { title: "Order {{order}} shipped", body: "Hi {{user.firstName}}, it arrives {{day}}." },
          pt: { title: "Pedido {{order}} enviado", body: "Oi {{user.firstName}}, chega {{day}}." },
          "de-DE": { title: "Bestellung {{order}} versandt", body: "Hallo {{user.firstName}}, Ankunft {{day}}." },
        },
        email: { en: { subject: "Order {{order}}", html: "<p>Hi {{user.firstName}}, note: {{note}}</p>" } },
      },
    };
    const r = await post("/v1/templates/shipped", tpl, { method: "PUT" });
    t.equal(r.status, 200);
    t.same(r.json.variables, ["day", "note", "order"], "variables derived from the text; user.* are the recipient's");
    const bad = await post("/v1/templates/broken", { defaultLocale: "en", channels: { push: { en: { title: "{{#if x}}", body: "b" } } } }, { method: "PUT" });
    t.equal(bad.status, 400);
    t.equal(bad.json.error.code, "NFX_ERR_TEMPLATE_INVALID");
    t.equal(bad.json.error.field, "channels.push.en.title");
    const noDefault = await post("/v1/templates/nodefault", { defaultLocale: "fr", channels: { push: { en: { title: "t", body: "b" } } } }, { method: "PUT" });
    t.equal(noDefault.json.error.field, "channels.push", "a channel without the default locale is refused");
    const noScope = await post("/v1/templates/x", tpl, { method: "PUT", key: MARKETING });
    t.same([noScope.status, noScope.json.error.code, noScope.json.error.message], [403, "NFX_ERR_SCOPE_MISSING", "authorization: key marketing lacks scope templates, needed for PUT /v1/templates/{id}"], "a key without the templates scope may not manage templates");
    t.equal((await get("/v1/templates/x")).status, 404, "and nothing was stored");
    t.same((await get("/v1/templates")).json, { templates: ["shipped"] }, "only the valid template was stored");
    const cli = await nfxRunner({ NFX_CONFIG: cluster.configFile })("templates", "list");
    t.equal(cli.stdout.trim(), "shipped", "`nfx templates list` sees it");
  });

  await t.test("each rule: same code and field on both surfaces; nothing stored", async (t) => {
    const before = await stored();
    const far = new Date(Date.now() + 40 * 86_400_000).toISOString();
    const cases: [string, unknown, string, string, number][] = [
      ["unknown field", { ...ok, colour: "red" }, "NFX_ERR_REQUEST_INVALID", "colour", 400],
      ["wrong type", { ...ok, recipients: "ana" }, "NFX_ERR_REQUEST_INVALID", "recipients", 400],
      ["empty recipients", { ...ok, recipients: [] }, "NFX_ERR_REQUEST_INVALID", "recipients", 400],
      ["too many recipients", { ...ok, recipients: Array.from({ length: 10_001 }, (_, i) => `u${i}`) }, "NFX_ERR_REQUEST_INVALID", "recipients", 400],
      ["id breaking a subject", { ...ok, recipients: ["ana.>"] }, "NFX_ERR_REQUEST_INVALID", "recipients.0", 400],
      ["APNs payload over 4096 bytes", { ...ok, content: { push: { title: "t".repeat(1000), body: "b".repeat(3500) } } }, "NFX_ERR_PAYLOAD_TOO_LARGE", "content.push", 422],
      ["collapse id over 64 bytes", { ...ok, collapseKey: "c".repeat(65) }, "NFX_ERR_REQUEST_INVALID", "collapseKey", 400],
      ["FCM data not a string", { ...ok, content: { push: { title: "t", body: "b", data: { n: 1 } } } }, "NFX_ERR_REQUEST_INVALID", "content.push.data.n", 400],
      ["FCM reserved key", { ...ok, content: { push: { title: "t", body: "b", data: { "gcm.x": "1" } } } }, "NFX_ERR_REQUEST_INVALID", "content.push.data.gcm.x", 400],
      ["SMS over 1600", { ...ok, content: { sms: { text: "s".repeat(1601) } } }, "NFX_ERR_REQUEST_INVALID", "content.sms.text", 400],
      ["email without subject", { ...ok, content: { email: { text: "hi" } } }, "NFX_ERR_REQUEST_INVALID", "content.email.subject", 400],
      ["expiry in the past", { ...ok, expiresAt: "2020-01-01T00:00:00Z" }, "NFX_ERR_SCHEDULE_INVALID", "expiresAt", 422],
      ["send-at too far ahead", { ...ok, sendAt: far }, "NFX_ERR_SCHEDULE_INVALID", "sendAt", 422],
      ["unknown template", { ...ok, content: undefined, template: { id: "nope" } }, "NFX_ERR_TEMPLATE_NOT_FOUND", "template.id", 422],
      ["missing template variable", { ...ok, content: undefined, template: { id: "shipped", variables: { order: "1", note: "n" } } }, "NFX_ERR_TEMPLATE_MISMATCH", "template.variables.day", 422],
      ["unknown category", { ...ok, category: "gossip" }, "NFX_ERR_CATEGORY_UNKNOWN", "category", 422],
      ["channel without a gateway", { ...ok, channels: ["push", "email"], content: { push: { title: "t", body: "b" }, email: { subject: "s", text: "t" } } }, "NFX_ERR_CHANNEL_UNAVAILABLE", "channels.1", 422],
      ["content only for channels without a gateway", { ...ok, content: { email: { subject: "s", text: "t" } } }, "NFX_ERR_CHANNEL_UNAVAILABLE", "content", 422],
      ["wanted channel without content", { ...ok, channels: ["sms"] }, "NFX_ERR_REQUEST_INVALID", "content.sms", 400],
      ["unknown segment", { ...ok, recipients: undefined, segment: "no_such_segment" }, "NFX_ERR_SEGMENT_UNKNOWN", "segment", 422],
      ["campaign options without a segment", { ...ok, campaign: { rate: 10 } }, "NFX_ERR_REQUEST_INVALID", "campaign", 400],
    ];
    for (const [name, body, code, field, httpStatus] of cases) {
      const e = await notify(nats.nc, body as Record<string, unknown>).then(() => null, (err: unknown) => err as ApiError);
      t.equal(e?.code, code, `NATS ${name}: ${code}`);
      t.equal(e?.field, field, `NATS ${name}: names ${field}`);
      const h = await post("/v1/notifications", body);
      t.equal(h.status, httpStatus, `HTTP ${name}: ${httpStatus}`);
      t.equal(h.json?.error?.code, code, `HTTP ${name}: ${code}`);
      t.equal(h.json?.error?.field, field, `HTTP ${name}: names ${field}`);
      t.match(h.json?.error?.message, field, `HTTP ${name}: the message names the field (${h.json?.error?.message})`);
    }
    t.equal(await stored(), before, "nothing was stored for any of them");
  });

  await t.test("HTTP: auth, media type, size, routes", async (t) => {
    const before = await stored();
    t.equal((await post("/v1/notifications", ok, { key: null })).json.error.code, "NFX_ERR_UNAUTHENTICATED", "no key: 401");
    t.equal((await post("/v1/notifications", ok, { key: "wrong-key-0123456789" })).status, 401, "unknown key: 401");
    const cat = await post("/v1/notifications", ok, { key: MARKETING });
    t.same([cat.status, cat.json.error.code, cat.json.error.field], [403, "NFX_ERR_FORBIDDEN", "category"], "a key limited to marketing may not send transactional");
    const prio = await post("/v1/notifications", { ...ok, category: "marketing", priority: "critical" }, { key: MARKETING });
    t.same([prio.status, prio.json.error.field], [403, "priority"], "nor critical priority");
    const mt = await post("/v1/notifications", "recipients=ana", { type: "application/x-www-form-urlencoded" });
    t.same([mt.status, mt.json.error.code], [415, "NFX_ERR_UNSUPPORTED_MEDIA_TYPE"]);
    const big = await post("/v1/notifications", { ...ok, pad: "x".repeat(300_000) });
    t.same([big.status, big.json.error.code], [413, "NFX_ERR_BODY_TOO_LARGE"]);
    const junk = await post("/v1/notifications", "{nope");
    t.same([junk.status, junk.json.error.code], [400, "NFX_ERR_REQUEST_UNDECODABLE"]);
    t.equal((await post("/v1/nothing", {})).status, 404);
    t.equal(await stored(), before, "no refused request stored anything");
    const good = await post("/v1/notifications", { ...ok, category: "marketing" }, { key: MARKETING });
    t.equal(good.status, 202, "the marketing key may send marketing (default priority bulk)");
    const s = await get(`/v1/notifications/${good.json.id}`);
    t.same([s.status, s.json.priority, s.json.category], [200, "bulk", "marketing"], "GET returns its status; priority came from the category");
    t.equal((await get("/v1/notifications/n_00000000000000000000000000")).status, 404);
    t.equal((await get("/v1/notifications/%E0%A4%A")).status, 400, "malformed percent-encoding in the path is a 400, not a crash");
    t.equal((await get("/v1/notifications/a.b")).json.error.field, "id", "a malformed id is refused naming the field");
  });

  await t.test("idempotency: same key and body -> one notification; different body -> 409", async (t) => {
    const before = await stored();
    const body = { ...ok, recipients: ["ben"], idempotencyKey: "order-77-shipped" };
    const a = await notify(nats.nc, body);
    const b = await notify(nats.nc, { ...body });
    t.equal(b.id, a.id, "NATS retry gets the same id");
    const c = await notify(nats.nc, { ...body, content: { push: { title: "Other", body: "B" } } }).then(() => null, (e: ApiError) => e);
    t.same([c?.code, c?.field], ["NFX_ERR_IDEMPOTENCY_CONFLICT", "idempotencyKey"], "a different body under the same key conflicts");
    const h1 = await post("/v1/notifications", { ...ok, recipients: ["ben"] }, { headers: { "idempotency-key": "order-77-shipped" } });
    const h2 = await post("/v1/notifications", { ...ok, recipients: ["ben"] }, { headers: { "idempotency-key": "order-77-shipped" } });
    t.equal(h1.status, 202);
    t.equal(h2.json.id, h1.json.id, "HTTP retry with the Idempotency-Key header gets the same id");
    t.equal(h2.headers.get("idempotent-replayed"), "true", "and says it is a replay");
    t.not(h1.json.id, a.id, "keys are per producer: the HTTP key and the NATS surface do not share keys");
    const h3 = await post("/v1/notifications", { ...ok, recipients: ["kai"] }, { headers: { "idempotency-key": "order-77-shipped" } });
    t.same([h3.status, h3.json.error.code], [409, "NFX_ERR_IDEMPOTENCY_CONFLICT"]);
    t.equal(await stored(), before + 2, "exactly two notifications stored (one per producer)");
    t.ok(await eventually(async () => (await status(nats.nc, a.id)).complete && (await status(nats.nc, h1.json.id)).complete));
    t.equal(cluster.sandbox!.recorder.accepted("apns").filter((d) => d.nid === a.id).length, 1, "ben got the NATS one once");
  });

  await t.test("templates render per recipient with locale fallback", async (t) => {
    const r = await post("/v1/notifications", { recipients: ["ana", "ben", "kai"], category: "transactional", template: { id: "shipped", variables: { order: "A-1", day: "Friday", note: "<b>" } } });
    t.equal(r.status, 202);
    t.ok(await eventually(async () => (await status(nats.nc, r.json.id)).complete));
    const got = Object.fromEntries(cluster.sandbox!.recorder.accepted().filter((d) => d.nid === r.json.id).map((d) => [d.token, `${d.title} | ${d.body}`]));
    t.same(got, {
      "f-ana": "Pedido A-1 enviado | Oi Ana, chega Friday.",
      "a-ben": "Bestellung A-1 versandt | Hallo Ben, Ankunft Friday.",
      "a-kai": "Order A-1 shipped | Hi Kai, it arrives Friday.",
    }, "pt-BR falls back to pt, de-DE matches exactly, ja-JP falls back to the default en; user attributes filled in");
    const forced = await notify(nats.nc, { recipients: ["kai"], category: "transactional", template: { id: "shipped", locale: "pt", variables: { order: "B-2", day: "Monday", note: "" } } });
    t.ok(await eventually(async () => (await status(nats.nc, forced.id)).complete));
    t.equal(cluster.sandbox!.recorder.accepted().find((d) => d.nid === forced.id)?.title, "Pedido B-2 enviado", "a locale in the request wins");
  });

  await t.test("send-at: held until due, then delivered once", async (t) => {
    const sendAt = Date.now() + 2500;
    const { id } = await notify(nats.nc, { ...ok, recipients: ["kai"], sendAt: new Date(sendAt).toISOString() });
    const early = await status(nats.nc, id);
    t.equal(early.sendAt, sendAt, "status shows when it will be sent");
    await new Promise((r) => setTimeout(r, 1500));
    t.equal(cluster.sandbox!.recorder.accepted().filter((d) => d.nid === id).length, 0, "nothing sent before send-at");
    t.ok(await eventually(async () => (await status(nats.nc, id)).complete, 15_000), "delivered after send-at");
    const d = cluster.sandbox!.recorder.accepted().filter((x) => x.nid === id);
    t.equal(d.length, 1, "once");
    t.ok(d[0].at >= sendAt, "not before its time");
  });

  await t.test("a producer's NATS user may request on the API with its key and publish nowhere else", async (t) => {
    const nc = await producerFor(t, cluster);
    const before = await stored();
    const { id } = await notify(nc, { ...ok, recipients: ["ana"] }, { apiKey: ADMIN });
    t.match(id, /^n_/, "producer can notify");
    t.equal((await status(nc, id, { apiKey: ADMIN })).id, id, "and read status");
    const nokey = await notify(nc, { ...ok, recipients: ["ana"] }).then(() => null, (e: ApiError) => e);
    t.equal(nokey?.code, "NFX_ERR_UNAUTHENTICATED", "without a key the producer is refused");
    const denied = await nc.request("nfx.intake.critical.n_forged", new TextEncoder().encode("x"), { timeout: 1000 }).then(() => null, (e: Error) => e);
    t.ok(denied, "a request on an intake subject fails");
    nc.publish("nfx.fan.critical.1", new TextEncoder().encode("forged"));
    await nc.flush().catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    t.equal(await stored(), before + 1, "only the API request was stored");
    const last = await nats.jsm.streams.getMessage(STREAM.fan, { last_by_subj: "nfx.fan.critical.1" }).catch(() => null);
    t.not(last && new TextDecoder().decode(last.data), "forged", "the forged fan chunk never reached NFX_FAN");
    const bad = await connect({ servers: cluster.nats.url, user: "producer", pass: "wrong" }).then(() => null, (e: Error) => e);
    t.ok(bad, "a wrong password is refused");
  });

  await t.test("critical is drained before a bulk backlog", async (t) => {
    const router = cluster.procs.get("router")!;
    await new Promise<void>((r) => (router.once("exit", () => r()), router.kill("SIGTERM")));
    const bulk = await Promise.all(Array.from({ length: 300 }, (_, i) => notify(nats.nc, { ...ok, category: "social", priority: "bulk", recipients: [i % 2 ? "ana" : "kai"], content: { push: { title: `bulk ${i}`, body: "b" } } })));
    const crit = await notify(nats.nc, { ...ok, category: "security", recipients: ["ben"], content: { push: { title: "critical", body: "b" } } });
    await cluster.startRole("router");
    t.ok(await eventually(async () => (await status(nats.nc, crit.id)).complete, 30_000));
    const bulkIds = new Set(bulk.map((b) => b.id));
    t.ok(await eventually(() => cluster.sandbox!.recorder.accepted().filter((d) => bulkIds.has(d.nid!)).length === 300, 60_000), "the whole backlog is delivered");
    const rec = cluster.sandbox!.recorder.accepted();
    const critAt = rec.find((d) => d.nid === crit.id)!.at;
    const bulkBefore = rec.filter((d) => bulkIds.has(d.nid!) && d.at < critAt).length;
    t.ok(bulkBefore < 150, `the critical send overtook the backlog (${bulkBefore} of 300 bulk sends went first)`);
  });
});
