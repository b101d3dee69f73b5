// Hostile input on both surfaces: prototype names, deeply nested JSON, ambiguous or out-of-range times; each refused with its code and field, nothing stored.
import { headers as natsHeaders } from "@nats-io/transport-node";
import t from "tap";

import { shardOf } from "../../lib/core/shard-hash.js";
import { API, STREAM } from "../../lib/core/subjects.js";
import { readUsers, writeUsers } from "../../lib/directory/directory.js";
import { callApi, ERROR_HEADER, status } from "../../lib/intake/api-client.js";
import { clientsFor, startTestCluster } from "../helpers/cluster.js";

const ADMIN = "admin-key-0123456789";

t.test("input safety", async (t) => {
  const cluster = await startTestCluster(t, {
    roles: ["ingest"],
    overrides: { ingest: { channels: ["push", "inapp"] }, apiKeys: [{ name: "admin", key: ADMIN, scopes: ["admin"] }] },
  });
  const cfg = cluster.cfg;
  const { nats, redis } = await clientsFor(t, cfg);
  await writeUsers(redis, cfg.cluster.shards, [{ id: "ana", devices: [{ id: "ana-phone", platform: "ios", token: "a-ana-0001" }] }]);
  const stored = async (): Promise<number> => (await nats.jsm.streams.info(STREAM.intake)).state.messages;

  /** Sends raw bytes on a NATS API subject; resolves with the error code/field/message or the reply. */
  const natsRaw = async (subject: string, body: string) => {
    const m = await nats.nc.request(subject, new TextEncoder().encode(body), { timeout: 10_000, headers: natsHeaders() });
    const json = JSON.parse(new TextDecoder().decode(m.data)) as { error?: { code: string; field?: string; message: string }; id?: string };
    return { code: m.headers?.get(ERROR_HEADER) || undefined, json };
  };
  const http = async (method: string, path: string, body?: string) => {
    const res = await fetch(`${cluster.httpUrl}${path}`, { method, headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" }, ...(body === undefined ? {} : { body }) });
    const text = await res.text();
    return { status: res.status, json: (text ? JSON.parse(text) : undefined) as { error?: { code: string; field?: string; message: string }; id?: string } & Record<string, unknown> };
  };
  /** Expects the same refusal on both surfaces for a notify body. */
  const refusedBoth = async (t: Tap, name: string, body: string, code: string, field: string, httpStatus: number, rule: RegExp) => {
    const n = await natsRaw(API.notify, body);
    t.equal(n.code, code, `NATS ${name}: ${code}`);
    t.equal(n.json.error?.field, field, `NATS ${name}: names ${field}`);
    t.match(n.json.error?.message, rule, `NATS ${name}: states the rule (${n.json.error?.message})`);
    const h = await http("POST", "/v1/notifications", body);
    t.equal(h.status, httpStatus, `HTTP ${name}: ${httpStatus}`);
    t.equal(h.json.error?.code, code, `HTTP ${name}: ${code}`);
    t.equal(h.json.error?.field, field, `HTTP ${name}: names ${field}`);
    t.match(h.json.error?.message, rule, `HTTP ${name}: states the rule`);
  };
  type Tap = typeof t;
  const ok = { recipients: ["ana"], category: "transactional", content: { push: { title: "T", body: "B" } } };
  const accepted = async (t: Tap, name: string, body: unknown): Promise<string[]> => {
    const n = await natsRaw(API.notify, JSON.stringify(body));
    t.equal(n.code, undefined, `NATS ${name}: accepted (${n.json.error?.message ?? ""})`);
    const h = await http("POST", "/v1/notifications", JSON.stringify(body));
    t.equal(h.status, 202, `HTTP ${name}: 202 (${h.json.error?.message ?? ""})`);
    return [n.json.id!, h.json.id!];
  };

  await t.test("prototype names: not categories, templates, preference keys or variables", async (t) => {
    const before = await stored();
    const reserved = /must not be a reserved name/;
    for (const category of ["constructor", "__proto__", "toString", "hasOwnProperty", "valueOf"]) {
      const rule = /^[a-z][a-z0-9_-]*$/.test(category) ? reserved : /must be a category name/;
      await refusedBoth(t, `category ${category}`, JSON.stringify({ ...ok, category }), "NFX_ERR_REQUEST_INVALID", "category", 400, rule);
    }
    await refusedBoth(t, "template constructor", JSON.stringify({ ...ok, content: undefined, template: { id: "constructor" } }), "NFX_ERR_REQUEST_INVALID", "template.id", 400, reserved);
    await refusedBoth(t, "template variable toString", JSON.stringify({ ...ok, content: undefined, template: { id: "t1", variables: { toString: "x" } } }), "NFX_ERR_REQUEST_INVALID", "template.variables.toString", 400, reserved);
    await refusedBoth(t, "a __proto__ key anywhere", `{"recipients":["ana"],"category":"transactional","content":{"push":{"title":"T","body":"B","data":{"__proto__":"x"}}}}`, "NFX_ERR_REQUEST_INVALID", "content.push.data.__proto__", 400, reserved);
    t.equal(await stored(), before, "nothing was stored");

    const putTpl = await http("PUT", "/v1/templates/constructor", JSON.stringify({ defaultLocale: "en", channels: { push: { en: { title: "t", body: "b" } } } }));
    t.same([putTpl.status, putTpl.json.error?.code, putTpl.json.error?.field], [400, "NFX_ERR_TEMPLATE_INVALID", "id"], "a template cannot be stored as constructor");
    const getTpl = await http("GET", "/v1/templates/constructor");
    t.same([getTpl.status, getTpl.json.error?.code], [404, "NFX_ERR_NOT_FOUND"], "nor found under that name");
    const tpl = await http("PUT", "/v1/templates/t1", JSON.stringify({ defaultLocale: "en", channels: { push: { en: { title: "Hi {{toString}}", body: "b" } } } }));
    t.equal(tpl.status, 200, "a template may use a variable named toString");
    await refusedBoth(t, "variable toString missing", JSON.stringify({ ...ok, content: undefined, template: { id: "t1" } }), "NFX_ERR_TEMPLATE_MISMATCH", "template.variables.toString", 422, /required by template t1/);

    const prefsBefore = (await readUsers(redis, shardOf("ana", cfg.cluster.shards), ["ana"]))[0];
    for (const key of ["constructor", "__proto__", "toString"]) {
      const body = `{"categories":{${JSON.stringify(key)}:{"push":false}}}`;
      const h = await http("PATCH", "/v1/users/ana/preferences", body);
      t.same([h.status, h.json.error?.code, h.json.error?.field], [400, "NFX_ERR_REQUEST_INVALID", `categories.${key}`], `HTTP preferences ${key}: 400 naming categories.${key}`);
      const n = await natsRaw(API.preferences, `{"user":"ana",${body.slice(1)}`);
      t.same([n.code, n.json.error?.field], ["NFX_ERR_REQUEST_INVALID", `categories.${key}`], `NATS preferences ${key}: refused naming categories.${key}`);
    }
    t.same((await readUsers(redis, shardOf("ana", cfg.cluster.shards), ["ana"]))[0], prefsBefore, "ana's record is unchanged");
    const good = await callApi<{ preferences?: unknown }>(nats.nc, API.preferences, { user: "ana", categories: { marketing: { push: false } } });
    t.ok(good, "a real category is still accepted");
  });

  await t.test("JSON nesting: 10,000 deep refused on both surfaces before parsing; the limit itself passes", async (t) => {
    const before = await stored();
    const limit = cfg.ingest.maxJsonDepth;
    t.equal(limit, 32, "default ingest.maxJsonDepth");
    const deepArray = "[".repeat(10_000) + "]".repeat(10_000);
    const deepObject = '{"a":'.repeat(10_000) + "1" + "}".repeat(10_000);
    const rule = new RegExp(`nest at most ${limit} .*ingest\\.maxJsonDepth`);
    await refusedBoth(t, "10,000-deep array body", deepArray, "NFX_ERR_REQUEST_INVALID", "(body)", 400, rule);
    await refusedBoth(t, "10,000-deep object body", deepObject, "NFX_ERR_REQUEST_INVALID", "(body)", 400, rule);
    const inPayload = (inner: string) => `{"recipients":["ana"],"category":"transactional","content":{"inapp":{"payload":{"x":${inner}}}}}`;
    await refusedBoth(t, "10,000-deep array inside a payload", inPayload(deepArray), "NFX_ERR_REQUEST_INVALID", "(body)", 400, rule);
    await refusedBoth(t, "10,000-deep object inside a payload", inPayload(deepObject), "NFX_ERR_REQUEST_INVALID", "(body)", 400, rule);
    // body 1, content 2, inapp 3, payload 4, x 5: `n` more arrays reach depth 5 + n - 1.
    const arrays = (n: number) => "[".repeat(n) + "]".repeat(n);
    await refusedBoth(t, "one level over the limit", inPayload(arrays(limit - 3)), "NFX_ERR_REQUEST_INVALID", "(body)", 400, rule);
    const brackets = '"[[[[{{{{"';
    t.equal((await refusedBothOrAccepted(inPayload(arrays(limit - 4)))), 2, "exactly at the limit: accepted on both surfaces");
    t.equal((await refusedBothOrAccepted(`{"recipients":["ana"],"category":"transactional","content":{"inapp":{"payload":{"s":${JSON.stringify(brackets.repeat(300))}}}}}`)), 2, "brackets inside strings do not count");
    t.equal(await stored(), before + 4, "only the accepted ones were stored");

    async function refusedBothOrAccepted(body: string): Promise<number> {
      const n = await natsRaw(API.notify, body);
      const h = await http("POST", "/v1/notifications", body);
      if (n.code) t.comment(`NATS: ${n.json.error?.message}`);
      if (h.status !== 202) t.comment(`HTTP: ${h.json.error?.message}`);
      return (n.code ? 0 : 1) + (h.status === 202 ? 1 : 0);
    }
  });

  await t.test("times: an explicit offset, send-at and expiry within bounds", async (t) => {
    const before = await stored();
    const now = Date.now();
    const offsetRule = /explicit offset/;
    await refusedBoth(t, "send-at a date alone", JSON.stringify({ ...ok, sendAt: "2030-01-01" }), "NFX_ERR_REQUEST_INVALID", "sendAt", 400, offsetRule);
    await refusedBoth(t, "send-at without an offset", JSON.stringify({ ...ok, sendAt: new Date(now + 3_600_000).toISOString().replace("Z", "") }), "NFX_ERR_REQUEST_INVALID", "sendAt", 400, offsetRule);
    await refusedBoth(t, "expiry without an offset", JSON.stringify({ ...ok, expiresAt: new Date(now + 3_600_000).toISOString().slice(0, 16) }), "NFX_ERR_REQUEST_INVALID", "expiresAt", 400, offsetRule);
    await refusedBoth(t, "send-at 30 February", JSON.stringify({ ...ok, sendAt: "2031-02-30T10:00:00Z" }), "NFX_ERR_REQUEST_INVALID", "sendAt", 400, offsetRule);
    await refusedBoth(t, "send-at epoch 0", JSON.stringify({ ...ok, sendAt: 0 }), "NFX_ERR_SCHEDULE_INVALID", "sendAt", 422, /not be more than 300 seconds in the past .*ingest\.maxSendBehindSec.*1970-01-01/);
    await refusedBoth(t, "send-at 1970 as ISO", JSON.stringify({ ...ok, sendAt: "1970-01-01T00:00:00Z" }), "NFX_ERR_SCHEDULE_INVALID", "sendAt", 422, /in the past/);
    await refusedBoth(t, "expiry epoch 0", JSON.stringify({ ...ok, expiresAt: 0 }), "NFX_ERR_SCHEDULE_INVALID", "expiresAt", 422, /must be in the future/);
    await refusedBoth(t, "expiry in year 9999", JSON.stringify({ ...ok, expiresAt: "9999-12-31T23:59:59Z" }), "NFX_ERR_SCHEDULE_INVALID", "expiresAt", 422, /at most 60 days ahead .*ingest\.maxExpiresAheadDays/);
    await refusedBoth(t, "send-at in year 9999", JSON.stringify({ ...ok, sendAt: "9999-12-31T23:59:59+00:00" }), "NFX_ERR_SCHEDULE_INVALID", "sendAt", 422, /at most 30 days ahead/);
    t.equal(await stored(), before, "none was stored");

    // Valid: an offset other than Z means that instant, not server-local time.
    const at = new Date(Math.ceil((now + 3_600_000) / 1000) * 1000);
    const plus2 = new Date(at.getTime() + 2 * 3_600_000).toISOString().replace(/\.\d{3}Z$/, "+02:00");
    const [a, b] = await accepted(t, "send-at with +02:00", { ...ok, sendAt: plus2, expiresAt: new Date(now + 7 * 86_400_000).toISOString() });
    t.equal((await status(nats.nc, a)).sendAt, at.getTime(), `${plus2} is ${at.toISOString()}`);
    t.equal((await status(nats.nc, b)).sendAt, at.getTime(), "the same on HTTP");
    const [c] = await accepted(t, "send-at 10 s in the past (within the grace)", { ...ok, sendAt: new Date(now - 10_000).toISOString() });
    t.equal((await status(nats.nc, c)).sendAt, undefined, "sent at once, not scheduled");
    await accepted(t, "epoch milliseconds (UTC by definition)", { ...ok, sendAt: now + 60_000 });
    t.equal(await stored(), before + 6, "the valid ones were stored");
  });
});
