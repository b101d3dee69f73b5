// Pure decisions of the pipeline: request validation, chunk planning, per-recipient decisions, provider payloads and error mapping.
import t from "tap";

import { apnsError, apnsNotification } from "../../actors/gateway-apns.js";
import { fcmError, fcmMessage } from "../../actors/gateway-fcm.js";
import { planChunks } from "../../actors/router.js";
import { RequestInvalid } from "../../lib/core/errors.js";
import { MAX_RECIPIENTS, parseNotifyRequest } from "../../lib/core/request-schema.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import type { FanChunk, NotificationBrief } from "../../lib/core/types.js";
import { decideChunk } from "../../lib/shard/chunk-decision.js";
import { DedupWindow } from "../../lib/shard/dedup-window.js";
import type { PolicyConfig } from "../../lib/shard/policy.js";
import { RateBuckets } from "../../lib/shard/rate-buckets.js";

const ok = { recipients: ["u1"], category: "transactional", content: { push: { title: "T", body: "B" } } };

t.test("notify request: structural rules name their field", async (t) => {
  const r = parseNotifyRequest(ok);
  t.equal(r.priority, undefined, "priority defaults later, from the category");
  const push = (p: object) => ({ ...ok, content: { push: { title: "T", body: "B", ...p } } });
  const bad: [unknown, string, RegExp][] = [
    [null, "(body)", /must be a JSON object/],
    [[1], "(body)", /must be a JSON object/],
    [{ ...ok, recipients: [] }, "recipients", /at least one/],
    [{ ...ok, recipients: Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => `u${i}`) }, "recipients", /at most 10000/],
    [{ ...ok, recipients: ["a.b"] }, "recipients.0", /1-128 characters/],
    [{ ...ok, recipients: ["a*"] }, "recipients.0", /1-128 characters/],
    [{ ...ok, recipients: ["x".repeat(129)] }, "recipients.0", /1-128 characters/],
    [{ ...ok, recipients: "u1" }, "recipients", /must be an array/],
    [{ ...ok, recipients: undefined }, "recipients", /exactly one of recipients, segment or topic/],
    [{ ...ok, segment: "active_30d" }, "recipients", /exactly one of recipients, segment or topic/],
    [{ ...ok, category: undefined }, "category", /is required/],
    [{ ...ok, category: "Bad Cat" }, "category", /category name/],
    [{ ...ok, content: undefined }, "content", /exactly one of content or template/],
    [{ ...ok, template: { id: "t" } }, "content", /exactly one of content or template/],
    [{ ...ok, content: {} }, "content", /at least one channel/],
    [push({ body: undefined }), "content.push.body", /is required/],
    [push({ title: 7 }), "content.push.title", /must be a string/],
    [push({ data: { n: 1 } }), "content.push.data.n", /FCM data values are strings/],
    [push({ data: { from: "x" } }), "content.push.data.from", /reserved FCM data key/],
    [push({ data: { "google.x": "y" } }), "content.push.data.google.x", /reserved FCM data key/],
    [push({ extra: 1 }), "content.push.extra", /unknown field/],
    [{ ...ok, content: { email: { html: "<p>x</p>" } } }, "content.email.subject", /is required for email/],
    [{ ...ok, content: { email: { subject: "s" } } }, "content.email.html", /needs html or text/],
    [{ ...ok, content: { sms: { text: "x".repeat(1601) } } }, "content.sms.text", /at most 1600/],
    [{ ...ok, content: { inapp: { payload: { big: "x".repeat(5000) } } } }, "content.inapp.payload", /4096 bytes/],
    [{ ...ok, collapseKey: "é".repeat(33) }, "collapseKey", /64 bytes/],
    [{ ...ok, ttlSec: 0 }, "ttlSec", /at least 1 second/],
    [{ ...ok, ttlSec: 60, expiresAt: Date.now() + 1000 }, "expiresAt", /not both/],
    [{ ...ok, sendAt: "next tuesday" }, "sendAt", /ISO 8601/],
    [{ ...ok, priority: "URGENT" }, "priority", /.+/],
    [{ ...ok, channels: ["push", "push"] }, "channels", /must not repeat/],
    [{ ...ok, channels: ["pigeon"] }, "channels.0", /.+/],
    [{ ...ok, template: { id: "t", variables: { "bad-name": 1 } }, content: undefined }, "template.variables.bad-name", /variable name/],
    [{ ...ok, template: { id: "t", variables: { v: { nested: 1 } } }, content: undefined }, "template.variables.v", /string, number or boolean/],
    [{ ...ok, template: { id: "t", locale: "english" }, content: undefined }, "template.locale", /locale tag/],
    [{ ...ok, idempotencyKey: "k".repeat(257) }, "idempotencyKey", /at most 256/],
    [{ ...ok, colour: "red" }, "colour", /unknown field/],
    [{ ...ok, deliverAt: { localTime: "9:00" } }, "deliverAt.localTime", /24-hour HH:MM/],
    [{ ...ok, deliverAt: { localTime: "09:00", window: "90s" } }, "deliverAt.window", /minutes or hours/],
    [{ ...ok, deliverAt: { localTime: "09:00", window: "24h" } }, "deliverAt.window", /less than 24h/],
    [{ ...ok, priority: "critical", deliverAt: { localTime: "09:00" } }, "deliverAt", /never held for a local time/],
  ];
  for (const [body, field, rule] of bad) {
    const err = t.throws(() => parseNotifyRequest(body)) as unknown as RequestInvalid;
    t.type(err, RequestInvalid);
    t.equal(err.field, field, `rejects with field ${field}`);
    t.match(err.message, `${field}: `, `message starts with ${field}`);
    t.match(err.message, rule, `${field}: states the rule (${err.message})`);
  }
  t.equal(parseNotifyRequest({ ...ok, sendAt: "2030-01-01T00:00:00Z" }).sendAt, Date.parse("2030-01-01T00:00:00Z"), "ISO times parse to epoch ms");
});

t.test("planChunks: every recipient once, grouped by shard, at most chunkSize each, deterministic", async (t) => {
  const users = Array.from({ length: 2500 }, (_, i) => `user-${i}`);
  const plan = planChunks(users, 8, 100);
  t.same(plan.flatMap((p) => p.users).sort(), [...users].sort(), "every recipient exactly once");
  for (const p of plan) {
    t.ok(p.users.length <= 100);
    t.ok(p.users.every((u) => shardOf(u, 8) === p.shard), `chunk ${p.shard}/${p.chunk} holds only its shard`);
  }
  t.same(planChunks(users, 8, 100), plan, "same input, same plan (replays publish the same message ids)");
});

const pushContent = { title: "T", body: "B", badge: 3, sound: "ding", data: { k: "v" } };
const brief: NotificationBrief = { id: "n_1", createdAt: 0, expiresAt: 10_000, priority: "high", category: "c", channels: ["push"], content: { push: pushContent }, collapseKey: "ck" };

t.test("decideChunk: unknown, expired, opted out, no devices, then one send per device", async (t) => {
  const chunk: FanChunk = { type: "fan_chunk", shard: 0, chunk: 0, notification: brief, users: ["gone", "out", "empty", "ok"] };
  const users = [
    null,
    { id: "out", optedOut: true, devices: [{ id: "d", platform: "ios" as const, token: "t" }] },
    { id: "empty", devices: [] },
    { id: "ok", devices: [{ id: "i", platform: "ios" as const, token: "ti" }, { id: "a", platform: "android" as const, token: "ta" }] },
  ];
  const policy: PolicyConfig = { categories: {}, defaultQuietHours: null, fallback: { critical: [], high: [], normal: [], bulk: [] }, available: new Set(["push"]) };
  const inputs = (now: number) => ({ users, online: null, now, cancelled: false, policy, state: { buckets: new RateBuckets(), dedup: new DedupWindow(60_000, () => now) }, trails: true });
  const d = decideChunk(chunk, inputs(5_000));
  t.same(d.sends.apns, [{ nid: "n_1", user: "ok", device: "i", token: "ti" }]);
  t.same(d.sends.fcm, [{ nid: "n_1", user: "ok", device: "a", token: "ta" }]);
  t.same(d.receipts.map((r) => `${r.user}:${r.outcome}:${r.reason ?? r.device}`), ["gone:suppressed:unknown_user", "out:suppressed:opted_out", "empty:suppressed:no_devices", "ok:queued:i", "ok:queued:a"]);
  const late = decideChunk(chunk, inputs(10_000));
  t.same(late.sends.apns.length + late.sends.fcm.length, 0, "nothing is sent once the notification expired");
  t.equal(late.receipts.filter((r) => r.reason === "expired").length, 3);
});

t.test("APNs payload and error mapping", async (t) => {
  const n = apnsNotification(brief, pushContent, "com.example");
  t.equal(n.topic, "com.example");
  t.equal(n.priority, 10);
  t.equal(n.collapseId, "ck");
  t.equal(n.expiry, 10);
  const body = JSON.parse((n as unknown as { compile(): string }).compile()) as { aps: { alert: { title: string; body: string }; badge: number; sound: string }; k: string; nfx: { id: string } };
  t.same(body.aps.alert, { title: "T", body: "B" });
  t.equal(body.aps.badge, 3);
  t.equal(body.aps.sound, "ding");
  t.equal(body.k, "v");
  t.equal(body.nfx.id, "n_1");
  t.equal(apnsNotification({ ...brief, priority: "bulk" }, pushContent, "x").priority, 5, "bulk and normal are power-conserving");
  const gone = apnsError({ device: "x", status: 410, response: { reason: "Unregistered" } });
  t.same([gone.retryable, gone.tokenInvalid, gone.reason], [false, true, "Unregistered"]);
  const busy = apnsError({ device: "x", status: 429, response: { reason: "TooManyRequests" } });
  t.same([busy.retryable, busy.tokenInvalid], [true, false]);
  t.equal(apnsError({ device: "x", status: 503, response: { reason: "ServiceUnavailable" } }).retryable, true);
  t.equal(apnsError({ device: "x", error: new Error("socket hang up") }).retryable, true, "transport errors are retryable");
  t.equal(apnsError({ device: "x", status: 413, response: { reason: "PayloadTooLarge" } }).retryable, false);
  // As the SDK rejects an ExpiredProviderToken answer (after minting a new token): the reason as its error's message.
  const expired = apnsError({ device: "x", status: 403, error: new Error("ExpiredProviderToken") });
  t.same([expired.retryable, expired.reason, expired.tokenInvalid], [true, "ExpiredProviderToken", false], "an expired provider token is retried with the new one");
  t.equal(apnsError({ device: "x", status: 403, response: { reason: "InvalidProviderToken" } }).retryable, false);
});

t.test("FCM message and error mapping", async (t) => {
  const m = fcmMessage(brief, pushContent, "tok", 4_000) as { token: string; notification: object; data: Record<string, string>; android: { ttl: number; priority: string; collapseKey: string } };
  t.equal(m.token, "tok");
  t.same(m.notification, { title: "T", body: "B" });
  t.same(m.data, { k: "v", nfx_id: "n_1" });
  t.same([m.android.ttl, m.android.priority, m.android.collapseKey], [6_000, "high", "ck"]);
  const gone = fcmError({ code: "messaging/registration-token-not-registered" });
  t.same([gone.retryable, gone.tokenInvalid], [false, true]);
  t.equal(fcmError({ code: "messaging/server-unavailable" }).retryable, true);
  t.equal(fcmError({ code: "messaging/invalid-argument" }).retryable, false);
});
