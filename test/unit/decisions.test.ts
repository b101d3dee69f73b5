// Pure decisions of the pipeline: request validation, chunk planning, per-recipient decisions, provider payloads and error mapping.
import t from "tap";
import { parseNotifyRequest, MAX_RECIPIENTS } from "../../lib/notify-schema.js";
import { RequestInvalid } from "../../lib/errors.js";
import { planChunks } from "../../actors/router.js";
import { decideChunk } from "../../actors/user-shard.js";
import { apnsError, apnsNotification } from "../../actors/gateway-apns.js";
import { fcmError, fcmMessage } from "../../actors/gateway-fcm.js";
import { shardOf } from "../../lib/shard.js";
import type { FanChunk, NotificationBrief } from "../../lib/types.js";

const ok = { recipients: ["u1"], push: { title: "T", body: "B" } };

t.test("notify request: defaults and every rule names its field", async (t) => {
  const r = parseNotifyRequest(ok);
  t.equal(r.priority, "normal");
  t.equal(r.category, "transactional");
  t.equal(r.ttlSec, 86400);
  const bad: [unknown, string][] = [
    [null, "(body)"],
    [{ ...ok, recipients: [] }, "recipients"],
    [{ ...ok, recipients: Array.from({ length: MAX_RECIPIENTS + 1 }, (_, i) => `u${i}`) }, "recipients"],
    [{ ...ok, recipients: ["a.b"] }, "recipients.0"],
    [{ ...ok, recipients: ["x".repeat(129)] }, "recipients.0"],
    [{ ...ok, push: { title: "T" } }, "push.body"],
    [{ ...ok, push: { title: "T", body: "B", data: { n: 1 } } }, "push.data.n"],
    [{ ...ok, push: { title: "T", body: "B", extra: 1 } }, "push.extra"],
    [{ ...ok, collapseKey: "é".repeat(33) }, "collapseKey"],
    [{ ...ok, ttlSec: 0 }, "ttlSec"],
    [{ ...ok, priority: "URGENT" }, "priority"],
  ];
  for (const [body, field] of bad) {
    const err = t.throws(() => parseNotifyRequest(body)) as unknown as RequestInvalid;
    t.type(err, RequestInvalid);
    t.equal(err.field, field, `rejects with field ${field}`);
    t.match(err.message, `${field}: `, `message starts with ${field}`);
  }
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

const brief: NotificationBrief = { id: "n_1", createdAt: 0, expiresAt: 10_000, priority: "high", category: "c", push: { title: "T", body: "B", badge: 3, sound: "ding", data: { k: "v" } }, collapseKey: "ck" };

t.test("decideChunk: unknown, expired, opted out, no devices, then one send per device", async (t) => {
  const chunk: FanChunk = { type: "fan_chunk", shard: 0, chunk: 0, notification: brief, users: ["gone", "out", "empty", "ok"] };
  const users = [
    null,
    { id: "out", optedOut: true, devices: [{ id: "d", platform: "ios" as const, token: "t" }] },
    { id: "empty", devices: [] },
    { id: "ok", devices: [{ id: "i", platform: "ios" as const, token: "ti" }, { id: "a", platform: "android" as const, token: "ta" }] },
  ];
  const d = decideChunk(chunk, users, 5_000);
  t.same(d.sends.apns, [{ nid: "n_1", user: "ok", device: "i", token: "ti" }]);
  t.same(d.sends.fcm, [{ nid: "n_1", user: "ok", device: "a", token: "ta" }]);
  t.same(d.receipts.map((r) => `${r.user}:${r.outcome}:${r.reason ?? r.device}`), ["gone:suppressed:unknown_user", "out:suppressed:opted_out", "empty:suppressed:no_devices", "ok:queued:i", "ok:queued:a"]);
  const late = decideChunk(chunk, users, 10_000);
  t.same(late.sends.apns.length + late.sends.fcm.length, 0, "nothing is sent once the notification expired");
  t.equal(late.receipts.filter((r) => r.reason === "expired").length, 3);
});

t.test("APNs payload and error mapping", async (t) => {
  const n = apnsNotification(brief, "com.example");
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
  t.equal(apnsNotification({ ...brief, priority: "bulk" }, "x").priority, 5, "bulk and normal are power-conserving");
  const gone = apnsError({ device: "x", status: 410, response: { reason: "Unregistered" } });
  t.same([gone.retryable, gone.tokenInvalid, gone.reason], [false, true, "Unregistered"]);
  const busy = apnsError({ device: "x", status: 429, response: { reason: "TooManyRequests" } });
  t.same([busy.retryable, busy.tokenInvalid], [true, false]);
  t.equal(apnsError({ device: "x", status: 503, response: { reason: "ServiceUnavailable" } }).retryable, true);
  t.equal(apnsError({ device: "x", error: new Error("socket hang up") }).retryable, true, "transport errors are retryable");
  t.equal(apnsError({ device: "x", status: 413, response: { reason: "PayloadTooLarge" } }).retryable, false);
});

t.test("FCM message and error mapping", async (t) => {
  const m = fcmMessage(brief, "tok", 4_000) as { token: string; notification: object; data: Record<string, string>; android: { ttl: number; priority: string; collapseKey: string } };
  t.equal(m.token, "tok");
  t.same(m.notification, { title: "T", body: "B" });
  t.same(m.data, { k: "v", nfx_id: "n_1" });
  t.same([m.android.ttl, m.android.priority, m.android.collapseKey], [6_000, "high", "ck"]);
  const gone = fcmError({ code: "messaging/registration-token-not-registered" });
  t.same([gone.retryable, gone.tokenInvalid], [false, true]);
  t.equal(fcmError({ code: "messaging/server-unavailable" }).retryable, true);
  t.equal(fcmError({ code: "messaging/invalid-argument" }).retryable, false);
});
