// Gateways on real NATS and Redis against the sandboxes: a replayed batch never calls a provider twice; provider errors become failed receipts.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { pino } from "pino";
import t from "tap";

import { createApnsClient } from "../../actors/gateway-apns.js";
import { createFcmClient } from "../../actors/gateway-fcm.js";
import { decodeJson, encode } from "../../lib/core/codec.js";
import { createLogger } from "../../lib/core/log.js";
import { dirChangedAll, sendSubject } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import { getUser, writeUsers } from "../../lib/directory/directory.js";
import { runGateway } from "../../lib/gateway/runner.js";
import { connectNats } from "../../lib/infra/nats.js";
import { connectRedis } from "../../lib/infra/redis.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { readReceipts } from "../../lib/tracking/status.js";
import { ensureApnsKey, sandboxOverrides, startSandbox } from "../../sandbox/index.js";
import { eventually } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

t.test("replayed send batches reuse the recorded outcome; dead and malformed tokens fail without retry", async (t) => {
  const servers = await startServers(t);
  const sandbox = await startSandbox({ apns: 0, fcm: 0, control: 0 });
  t.teardown(sandbox.close);
  const key = ensureApnsKey(join(mkdtempSync(join(tmpdir(), "nfx-key-")), "k.p8"));
  const cfg = servers.config(sandboxOverrides(sandbox.ports, key));
  const log = createLogger({ level: "warn", redact: true }, pino.destination(2));
  const nats = await connectNats(cfg, log, "test");
  const redis = await connectRedis(cfg, log);
  await ensureTopology(nats, cfg);
  const gws = [await runGateway({ cfg, nats, redis, log }, () => createApnsClient(cfg)), await runGateway({ cfg, nats, redis, log }, () => createFcmClient(cfg))];
  t.teardown(async () => {
    for (const g of gws) await g.stop();
    await nats.nc.drain();
    redis.disconnect();
  });

  const nid = "n_replaytest0000000000000000";
  const brief = { id: nid, createdAt: Date.now(), expiresAt: Date.now() + 60_000, priority: "normal" as const, category: "c", channels: ["push" as const], content: { push: { title: "T", body: "B" } } };
  const apnsBatch: SendBatch = {
    type: "send_batch", channel: "apns", shard: 3, notifications: { [nid]: brief },
    sends: [
      { nid, user: "u1", device: "d1", token: "aaaa01" },
      { nid, user: "u2", device: "d2", token: "gone-aaaa02" },
      { nid, user: "u3", device: "d3", token: "bad-aaaa03" },
    ],
  };
  const fcmBatch: SendBatch = { ...apnsBatch, channel: "fcm", sends: [{ nid, user: "u4", device: "d4", token: "ffff04" }, { nid, user: "u5", device: "d5", token: "gone-ffff05" }] };

  // Directory entries for the recipients: gone tokens must leave it, a malformed one stays.
  await writeUsers(redis, cfg.cluster.shards, [
    { id: "u2", devices: [{ id: "d2", platform: "ios", token: "gone-aaaa02" }, { id: "d2b", platform: "ios", token: "keep-aaaa22" }] },
    { id: "u3", devices: [{ id: "d3", platform: "ios", token: "bad-aaaa03" }] },
    { id: "u5", devices: [{ id: "d5", platform: "android", token: "gone-ffff05" }] },
  ]);
  const changes: string[] = [];
  const sub = nats.nc.subscribe(dirChangedAll, { callback: (_e, m) => void changes.push(decodeJson<{ user: string }>(m.data).user) });
  t.teardown(() => sub.unsubscribe());

  await nats.js.publish(sendSubject("apns", "normal"), encode(apnsBatch), { msgID: "first-apns" });
  await nats.js.publish(sendSubject("fcm", "normal"), encode(fcmBatch), { msgID: "first-fcm" });
  t.ok(await eventually(async () => (await readReceipts(nats, nid)).length === 5), "five receipts after the first delivery");

  // The same batches again under new message ids: what a redelivery after a crash looks like to the gateway.
  await nats.js.publish(sendSubject("apns", "normal"), encode(apnsBatch), { msgID: "again-apns" });
  await nats.js.publish(sendSubject("fcm", "normal"), encode(fcmBatch), { msgID: "again-fcm" });
  t.ok(await eventually(async () => (await readReceipts(nats, nid)).length === 10), "the replay re-emits all five receipts");

  const rec = sandbox.recorder;
  const requests = (p: "apns" | "fcm", token: string): number => rec.deliveries.filter((d) => d.provider === p && d.token === token).length;
  t.equal(requests("apns", "aaaa01"), 1, "APNs called once for the good token despite the replay");
  t.equal(requests("apns", "gone-aaaa02"), 1, "APNs 410 Unregistered: called once, never retried");
  t.equal(requests("apns", "bad-aaaa03"), 1, "APNs 400 BadDeviceToken: called once, never retried");
  t.equal(requests("fcm", "ffff04"), 1, "FCM called once for the good token despite the replay");
  t.equal(requests("fcm", "gone-ffff05"), 1, "FCM UNREGISTERED: called once, never retried");

  const receipts = await readReceipts(nats, nid);
  const outcome = (user: string): string[] => receipts.filter((r) => r.user === user).map((r) => `${r.outcome}:${r.reason ?? ""}`);
  t.same(outcome("u1"), ["sent:", "sent:"], "u1 sent, and the replay reports the same");
  t.same(outcome("u2"), ["failed:Unregistered", "failed:Unregistered"], "u2 failed with APNs' reason");
  t.same(outcome("u3"), ["failed:BadDeviceToken", "failed:BadDeviceToken"], "u3 failed with APNs' reason");
  t.same(outcome("u4"), ["sent:", "sent:"], "u4 sent");
  t.same(outcome("u5"), ["failed:messaging/registration-token-not-registered", "failed:messaging/registration-token-not-registered"], "u5 failed with FCM's reason");
  t.match(receipts.find((r) => r.user === "u4")?.providerId, /^projects\/nfx-sandbox\/messages\//, "FCM's message name is kept as the provider id");

  t.same((await getUser(redis, cfg.cluster.shards, "u2"))?.devices.map((x) => x.id), ["d2b"], "APNs 410 Unregistered: the dead token's device left the directory, the other stayed");
  t.same((await getUser(redis, cfg.cluster.shards, "u5"))?.devices, [], "FCM UNREGISTERED: removed too");
  t.same((await getUser(redis, cfg.cluster.shards, "u3"))?.devices, [], "APNs BadDeviceToken: removed too (the token can never work with this app)");
  t.ok(await eventually(() => changes.length === 3), "each removal announced on the directory change subject");
  t.same(changes.sort(), ["u2", "u3", "u5"]);
});
