// Provider gateways on real NATS and Redis against the four sandboxes: email and SMS in their providers' words, Retry-After, quota backoff, breakers with failover, claims against concurrent replays.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { pino } from "pino";
import t from "tap";

import { createApnsClient } from "../../actors/gateway-apns.js";
import { createEmailClient } from "../../actors/gateway-email.js";
import { createFcmClient } from "../../actors/gateway-fcm.js";
import { createSmsClient } from "../../actors/gateway-sms.js";
import { encode } from "../../lib/core/codec.js";
import { type Config, loadConfig } from "../../lib/core/config.js";
import { createLogger } from "../../lib/core/log.js";
import { type Channel, sendSubject } from "../../lib/core/subjects.js";
import type { NotificationBrief, ReceiptEntry, Send, SendBatch } from "../../lib/core/types.js";
import { runGateway } from "../../lib/gateway/runner.js";
import { connectNats } from "../../lib/infra/nats.js";
import { connectRedis } from "../../lib/infra/redis.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { readReceipts } from "../../lib/tracking/status.js";
import { ensureApnsKey, sandboxOverrides, startSandbox } from "../../sandbox/index.js";
import type { Delivery } from "../../sandbox/recorder.js";
import { eventually } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const AC1 = "AC11111111111111111111111111111111";
const AC2 = "AC22222222222222222222222222222222";

t.test("gateways", async (t) => {
  const servers = await startServers(t);
  const sandbox = await startSandbox({});
  t.teardown(sandbox.close);
  const rec = sandbox.recorder;
  const key = ensureApnsKey(join(mkdtempSync(join(tmpdir(), "nfx-key-")), "k.p8"));
  // Two Twilio accounts: "primary" opens its breaker after 3 failed requests and hands over to "backup" meanwhile.
  const gateways = {
    retry: { baseMs: 100, maxMs: 2000, quotaMs: 3000 },
    sms: {
      apps: [
        { name: "primary", accountSid: AC1, concurrency: 1, breaker: { failures: 3, halfOpenAfterMs: 1500 }, failover: "backup" },
        { name: "backup", accountSid: AC2 },
      ],
    },
    email: { apps: [{ batchSize: 1000 }] },
    // Two iOS apps, each with its own key and topic; two FCM projects, the second limited to 200 sends/s.
    apns: { apps: [{ topic: "com.example.shop" }, { name: "wallet", topic: "com.example.wallet" }] },
    fcm: { apps: [{ projectId: "shop-prod" }, { projectId: "wallet-prod", packages: ["com.example.wallet"], ratePerSec: 200 }] },
  };
  const shape = loadConfig({ env: {}, overrides: { gateways } }).gateways;
  const cfg: Config = servers.config({ gateways: { ...gateways, ...(sandboxOverrides(sandbox.ports, key, shape).gateways as object) } });
  const log = createLogger({ level: "warn", redact: true }, pino.destination(2));
  const nats = await connectNats(cfg, log, "test");
  const redis = await connectRedis(cfg, log);
  await ensureTopology(nats, cfg);
  const d = { cfg, nats, redis, log };
  const gws = await Promise.all([runGateway(d, () => createApnsClient(cfg)), runGateway(d, () => createFcmClient(cfg)), runGateway(d, () => createEmailClient(cfg)), runGateway(d, () => createSmsClient(cfg))]);
  t.teardown(async () => {
    for (const g of gws) await g.stop();
    await nats.nc.drain();
    redis.disconnect();
  });

  let seq = 0;
  const brief = (content: NotificationBrief["content"], priority: NotificationBrief["priority"] = "high"): NotificationBrief => ({
    id: `n_gw${String(++seq).padStart(25, "0")}`, createdAt: Date.now(), expiresAt: Date.now() + 120_000, priority, category: "transactional", channels: ["push"], content,
  });
  const publish = (channel: Channel, n: NotificationBrief, sends: Omit<Send, "nid">[], msgID = `${n.id}:${channel}`): Promise<unknown> => {
    const batch: SendBatch = { type: "send_batch", channel, shard: 1, notifications: { [n.id]: n }, sends: sends.map((s) => ({ ...s, nid: n.id })) };
    return nats.js.publish(sendSubject(channel, n.priority), encode(batch), { msgID });
  };
  const final = (r: ReceiptEntry): boolean => r.outcome === "sent" || r.outcome === "failed";
  const settled = async (nid: string, count: number, ms = 20_000): Promise<ReceiptEntry[]> => {
    await eventually(async () => (await readReceipts(nats, nid)).filter(final).length >= count, ms);
    return (await readReceipts(nats, nid)).filter(final);
  };
  const calls = (p: Delivery["provider"], token: string): Delivery[] => rec.deliveries.filter((x) => x.provider === p && x.token === token);

  t.test("email: one SendGrid request for many recipients; a bad address fails alone", async (t) => {
    const n = brief({ email: { subject: "Your receipt", text: "Paid 12.00" } });
    await publish("email", n, [
      { user: "e1", device: "email", token: "ana@example.com" },
      { user: "e2", device: "email", token: "bo@example.com" },
      { user: "e3", device: "email", token: "bad-address@example.com" },
    ]);
    const rs = await settled(n.id, 3);
    const by = Object.fromEntries(rs.map((r) => [r.user, r]));
    t.same([by.e1?.outcome, by.e2?.outcome], ["sent", "sent"], "the good addresses were sent");
    t.match(by.e3, { outcome: "failed", reason: /400 .*personalizations\.2\.to\.0\.email/ }, "the bad one failed with SendGrid's reason naming the field");
    t.ok(by.e1?.providerId && by.e1.providerId === by.e2?.providerId, "both carry the request's X-Message-Id");
    const ana = rec.accepted("sendgrid").filter((x) => x.token === "ana@example.com");
    t.equal(ana.length, 1, "ana got it once");
    t.same([ana[0]?.title, ana[0]?.body, ana[0]?.nid, ana[0]?.account], ["Your receipt", "Paid 12.00", n.id, "SG.nfx-sandbox-key"], "with the subject, text, notification id and the account's key");
    t.equal(calls("sendgrid", "bad-address@example.com").length, 1, "the bad address was tried once, never retried");
  });

  t.test("email: per-recipient rendering through personalizations; 1,000 per request", async (t) => {
    const n = brief(undefined);
    const sends = Array.from({ length: 1200 }, (_, i) => ({ user: `m${i}`, device: "email", token: `m${i}@example.com`, email: { subject: `Hi m${i}`, text: `Your code is ${i}` } }));
    await publish("email", n, sends);
    const rs = await settled(n.id, 1200);
    t.equal(rs.filter((r) => r.outcome === "sent").length, 1200, "all 1,200 sent");
    const got = rec.accepted("sendgrid").filter((x) => x.nid === n.id);
    t.equal(got.length, 1200, "each recipient once");
    t.same([got.find((x) => x.token === "m7@example.com")?.title, got.find((x) => x.token === "m7@example.com")?.body], ["Hi m7", "Your code is 7"], "each with its own rendering");
    t.equal(new Set(rs.map((r) => r.providerId)).size, 2, "in two requests (1,000 + 200)");
    // A second copy of the batch under another message id finds every recipient recorded (one write per request): nothing goes twice.
    await publish("email", n, sends, `${n.id}:email:copy`);
    t.ok(await eventually(async () => (await readReceipts(nats, n.id)).filter((r) => r.echo).length >= 1200, 20_000), "the copy's 1,200 receipts repeat the recorded outcomes");
    t.equal(rec.accepted("sendgrid").filter((x) => x.nid === n.id).length, 1200, "still each recipient once");
  });

  t.test("SMS: Twilio message sid kept; invalid and unsubscribed numbers fail without retry", async (t) => {
    const n = brief({ sms: { text: "Code 4321" } });
    await publish("sms", n, [
      { user: "s1", device: "sms", token: "+15551230001" },
      { user: "s2", device: "sms", token: "+99912345678" },
      { user: "s3", device: "sms", token: "12345" },
    ]);
    const by = Object.fromEntries((await settled(n.id, 3)).map((r) => [r.user, r]));
    t.match(by.s1, { outcome: "sent", providerId: /^SM[0-9a-f]{32}$/ }, "sent, with Twilio's message sid");
    t.match(by.s2, { outcome: "failed", reason: /^21610 / }, "unsubscribed recipient: Twilio's 21610");
    t.match(by.s3, { outcome: "failed", reason: /^21211 / }, "invalid number: Twilio's 21211");
    t.same([calls("twilio", "+99912345678").length, calls("twilio", "12345").length], [1, 1], "neither retried");
    t.equal(rec.accepted("twilio").find((x) => x.token === "+15551230001")?.body, "Code 4321", "the text arrived");
  });

  t.test("APNs and FCM: groups of sends in one SDK call, each send its own call and its own answer", async (t) => {
    // 70 APNs sends: requests of 32, 32 and 6 (groupSize); a token shared by two users, a gone and a bad token, one
    // send with content rendered for its recipient. 40 FCM sends likewise.
    for (const [channel, n, gone] of [["apns", 70, "Unregistered"], ["fcm", 40, "messaging/registration-token-not-registered"]] as const) {
      const b = brief({ push: { title: "T", body: "B" } });
      const sends: Omit<Send, "nid">[] = Array.from({ length: n }, (_, i) => ({ user: `${channel}g${i}`, device: "d", token: `${channel}-grp-${i}` }));
      sends[1].token = sends[0].token;
      sends[5].token = `gone-${channel}-grp`;
      sends[6].token = `bad-${channel}-grp`;
      const own = n - 3;
      sends[own].push = { title: "Own", body: "rendered" };
      await publish(channel, b, sends);
      const rs = await settled(b.id, n);
      const by = new Map(rs.map((r) => [r.user, r]));
      t.equal(by.size, n, `${channel}: one final receipt per send`);
      t.match(by.get(`${channel}g5`), { outcome: "failed", reason: gone }, `${channel}: the gone token failed alone`);
      t.equal(by.get(`${channel}g6`)?.outcome, "failed", `${channel}: the bad token failed alone`);
      const sent = rs.filter((r) => r.outcome === "sent");
      t.equal(sent.length, n - 2, `${channel}: every other send was sent`);
      t.equal(new Set(sent.map((r) => r.providerId)).size, n - 2, `${channel}: each with its own provider id`);
      t.equal(calls(channel, sends[0].token).length, 2, `${channel}: the shared token was called once per user`);
      t.ok(sends.every((s, i) => i === 1 || calls(channel, s.token).length === (i === 0 ? 2 : 1)), `${channel}: every other token exactly once`);
      t.same(calls(channel, sends[own].token).map((x) => x.title), ["Own"], `${channel}: rendered content went to its recipient only`);
      t.ok(sends.every((s, i) => i === own || calls(channel, s.token).every((x) => x.title === "T")), `${channel}: the others got the notification's content`);
    }
  });

  t.test("no retry before Retry-After (APNs 503 with retry-after: 2)", async (t) => {
    const id = rec.faults.add({ provider: "apns", prefix: "ra-", errors: [{ code: "503", rate: 1, retryAfterSec: 2 }] });
    const n = brief({ push: { title: "T", body: "B" } });
    await publish("apns", n, [{ user: "r1", device: "d", token: "ra-0001" }]);
    t.ok(await eventually(() => calls("apns", "ra-0001").length === 1), "first attempt answered 503");
    rec.faults.remove({ id });
    const [r] = await settled(n.id, 1);
    const tries = calls("apns", "ra-0001");
    t.equal(r?.outcome, "sent", "then sent");
    t.equal(tries.length, 2, "on the second attempt");
    t.ok(tries[1].at - tries[0].at >= 2000, `the retry came ${tries[1].at - tries[0].at} ms later, not before Retry-After (backoff alone would be ~100 ms)`);
  });

  t.test("FCM QUOTA_EXCEEDED backs off at least gateways.retry.quotaMs", async (t) => {
    const id = rec.faults.add({ provider: "fcm", prefix: "q-", errors: [{ code: "429", rate: 1 }] });
    const n = brief({ push: { title: "T", body: "B" } });
    await publish("fcm", n, [{ user: "q1", device: "d", token: "q-0001" }]);
    t.ok(await eventually(() => calls("fcm", "q-0001").length === 1), "first attempt answered 429 QUOTA_EXCEEDED");
    t.equal(calls("fcm", "q-0001")[0]?.reason, "QUOTA_EXCEEDED");
    rec.faults.remove({ id });
    await settled(n.id, 1);
    const tries = calls("fcm", "q-0001");
    t.equal(tries.length, 2, "sent on the second attempt");
    t.ok(tries[1].at - tries[0].at >= cfg.gateways.retry.quotaMs, `the retry waited ${tries[1].at - tries[0].at} ms (quotaMs ${cfg.gateways.retry.quotaMs}; backoff alone would be ~100 ms)`);
  });

  t.test("breaker: opens after 3 failures, the backup account takes over, half-opens, closes", async (t) => {
    const id = rec.faults.add({ provider: "twilio", account: AC1, errors: [{ code: "503", rate: 1 }] });
    const n = brief({ sms: { text: "Outage test" } });
    const users = Array.from({ length: 8 }, (_, i) => ({ user: `b${i}`, device: "sms", token: `+1555200000${i}` }));
    await publish("sms", n, users);
    const rs = await settled(n.id, 8);
    t.equal(rs.filter((r) => r.outcome === "sent").length, 8, "every message was sent");
    const primary = rec.deliveries.filter((x) => x.provider === "twilio" && x.account === AC1 && users.some((u) => u.token === x.token));
    t.equal(primary.length, 3, "the primary account was called 3 times (all 503), then its breaker opened");
    const backup = rec.accepted("twilio").filter((x) => x.account === AC2 && users.some((u) => u.token === x.token));
    t.equal(backup.length, 8, "the backup account delivered all 8, once each");
    t.equal(new Set(backup.map((x) => x.token)).size, 8);
    const opened = primary[2].at;

    rec.faults.remove({ id });
    await new Promise((r) => setTimeout(r, 1600));
    const n2 = brief({ sms: { text: "After" } }, "critical");
    await publish("sms", n2, [{ user: "c0", device: "sms", token: "+15553000000" }]);
    await settled(n2.id, 1);
    const trial = rec.deliveries.filter((x) => x.account === AC1 && x.token === "+15553000000");
    t.equal(trial.length, 1, "half-open: the next message went to the primary as the trial");
    t.ok(trial[0].at - opened >= 1500, `no primary call while open (${trial[0].at - opened} ms ≥ halfOpenAfterMs)`);
    t.equal(trial[0].status, 201, "and succeeded");
    const n3 = brief({ sms: { text: "Closed" } }, "critical");
    await publish("sms", n3, Array.from({ length: 3 }, (_, i) => ({ user: `z${i}`, device: "sms", token: `+1555400000${i}` })));
    await settled(n3.id, 3);
    t.equal(rec.accepted("twilio").filter((x) => x.account === AC1 && x.token.startsWith("+1555400000")).length, 3, "closed again: the primary sends everything");
  });

  t.test("several apps per channel: each device goes through its own app; an app's rate limit holds it to its quota", async (t) => {
    const n = brief({ push: { title: "T", body: "B" } });
    await publish("apns", n, [
      { user: "w1", device: "d1", token: "aa01", app: "com.example.wallet" },
      { user: "w2", device: "d2", token: "aa02", app: "com.example.shop" },
      { user: "w3", device: "d3", token: "aa03" },
    ]);
    await settled(n.id, 3);
    t.same(["aa01", "aa02", "aa03"].map((tok) => calls("apns", tok).map((x) => x.headers["apns-topic"])), [["com.example.wallet"], ["com.example.shop"], ["com.example.shop"]], "APNs: by the device's bundle id; unknown apps use the first app");

    const m = brief({ push: { title: "T", body: "B" } });
    const sends = Array.from({ length: 600 }, (_, i) => ({ user: `v${i}`, device: "d", token: `rl-${i}`, app: "com.example.wallet" }));
    const t0 = Date.now();
    await publish("fcm", m, sends);
    const rs = await settled(m.id, 600, 30_000);
    const took = Math.max(...rec.accepted("fcm").filter((x) => x.nid === m.id).map((x) => x.at)) - t0;
    t.equal(rs.filter((r) => r.outcome === "sent").length, 600, "all 600 sent");
    t.ok(rec.accepted("fcm").filter((x) => x.nid === m.id).every((x) => x.account === "wallet-prod"), "through the project that lists the package");
    t.ok(took >= 1900, `at 200/s after a one-second burst, 600 sends took ${took} ms (≥ 2 s)`);
  });

  t.test("a batch delivered twice at once calls the provider once per key (the claim)", async (t) => {
    const id = rec.faults.add({ provider: "fcm", prefix: "slow-", latencyMs: 1500 });
    const n = brief({ push: { title: "T", body: "B" } });
    const sends = [{ user: "k1", device: "d1", token: "slow-1" }, { user: "k2", device: "d2", token: "slow-2" }];
    await Promise.all([publish("fcm", n, sends, "dup-a"), publish("fcm", n, sends, "dup-b")]);
    const rs = await settled(n.id, 4, 30_000);
    rec.faults.remove({ id });
    t.same([calls("fcm", "slow-1").length, calls("fcm", "slow-2").length], [1, 1], "FCM was called once per device");
    t.equal(rs.filter((r) => r.outcome === "sent").length, 4, "both copies report the device as sent");
  });
});
