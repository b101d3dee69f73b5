// Gateway claims on real NATS and Redis against the FCM sandbox: a slow provider call keeps its claim past claimTtlSec (renewal); a dead attempt's claim lapses and its send goes once; outcomes are recorded as each request answers; a delivery waits for an earlier one of the same message.
import { createHash } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { pino } from "pino";
import t from "tap";

import { createFcmClient } from "../../actors/gateway-fcm.js";
import { encode } from "../../lib/core/codec.js";
import { deliveredField, deliveredKey, sendBatchDoneKey } from "../../lib/core/keys.js";
import { createLogger } from "../../lib/core/log.js";
import { MSGID, sendSubject } from "../../lib/core/subjects.js";
import type { NotificationBrief, ReceiptEntry, Send, SendBatch } from "../../lib/core/types.js";
import { Claims, OutcomeWriter } from "../../lib/gateway/delivery-claims.js";
import { DeliveryLedger } from "../../lib/gateway/delivery-ledger.js";
import { runGateway } from "../../lib/gateway/runner.js";
import { connectNats } from "../../lib/infra/nats.js";
import { connectRedis, masterClients, warnRedisSettings } from "../../lib/infra/redis.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { readReceipts } from "../../lib/tracking/status.js";
import { ensureApnsKey, sandboxOverrides, startSandbox } from "../../sandbox/index.js";
import { eventually } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const TTL = 3;

t.test("gateway claims", async (t) => {
  const servers = await startServers(t);
  const sandbox = await startSandbox({ fcm: 0, control: 0 });
  t.teardown(sandbox.close);
  const rec = sandbox.recorder;
  const key = ensureApnsKey(join(mkdtempSync(join(tmpdir(), "nfx-key-")), "k.p8"));
  const sb = sandboxOverrides(sandbox.ports, key);
  // Send batches checked by their publishers (shard.reconcileSends on, as on replicated streams): the gateway marks each one done.
  const cfg = servers.config({ ...sb, gateways: { ...(sb.gateways as object), claimTtlSec: TTL }, shard: { reconcileSends: "on" } });
  const log = createLogger({ level: "warn", redact: true }, pino.destination(2));
  const nats = await connectNats(cfg, log, "test");
  const redis = await connectRedis(cfg, log);
  await ensureTopology(nats, cfg);
  const gw = await runGateway({ cfg, nats, redis, log }, () => createFcmClient(cfg));
  t.teardown(async () => {
    await gw.stop();
    await nats.nc.drain();
    redis.disconnect();
  });

  let seq = 0;
  const brief = (): NotificationBrief => ({
    id: `n_gc${String(++seq).padStart(25, "0")}`, createdAt: Date.now(), expiresAt: Date.now() + 120_000, priority: "high", category: "transactional", channels: ["push"], content: { push: { title: "T", body: "B" } },
  });
  const publish = (n: NotificationBrief, sends: Omit<Send, "nid">[], msgID: string): Promise<unknown> => {
    const batch: SendBatch = { type: "send_batch", channel: "fcm", shard: 1, notifications: { [n.id]: n }, sends: sends.map((s) => ({ ...s, nid: n.id })) };
    return nats.js.publish(sendSubject("fcm", n.priority), encode(batch), { msgID });
  };
  const sent = async (nid: string, count: number): Promise<ReceiptEntry[]> => {
    await eventually(async () => (await readReceipts(nats, nid)).filter((r) => r.outcome === "sent").length >= count, 30_000);
    return (await readReceipts(nats, nid)).filter((r) => r.outcome === "sent");
  };
  const calls = (token: string): number => rec.accepted("fcm").filter((x) => x.token === token).length;
  /** A send's delivery key: a field of its notification's hash. */
  const keyOf = (nid: string, user: string, device: string): [string, string] => [deliveredKey(1, nid, "fcm"), deliveredField(user, device)];
  const get = ([h, f]: [string, string]): Promise<string | null> => redis.hget(h, f);
  /** Sets a key as an attempt that died would have left it: marker `v`, lapsing `ttlSec` from now. */
  const claimed = ([h, f]: [string, string], v: string, ttlSec: number): Promise<number> => redis.hset(h, f, `${v}@${Date.now() + ttlSec * 1000}`);

  t.test("a provider call slower than claimTtlSec keeps its claim: a second copy of the batch does not send again", async (t) => {
    const id = rec.faults.add({ provider: "fcm", prefix: "slow-", latencyMs: (TTL + 3) * 1000 });
    const n = brief();
    const sends = [{ user: "s1", device: "d1", token: "slow-c1" }];
    await publish(n, sends, "slow-a");
    t.ok(await eventually(async () => (await get(keyOf(n.id, "s1", "d1")))?.startsWith("~") ?? false, 5000), "the first copy claimed the key");
    // The copy arrives after the first claim's TTL would have run out without renewal.
    await new Promise((r) => setTimeout(r, (TTL + 1) * 1000));
    await publish(n, sends, "slow-b");
    await sent(n.id, 2);
    rec.faults.remove({ id });
    // Both copies reported "sent": a second call would have come before the second receipt; a short wait catches a stray one.
    await new Promise((r) => setTimeout(r, 500));
    t.equal(calls("slow-c1"), 1, "FCM was called once for the device");
  });

  t.test("outcome writes of one turn: one value for many fields (sent once), values per field, deletions, holds", async (t) => {
    const w = new OutcomeWriter(redis);
    const [h1, h2, h3] = ["w1", "w2", "w3"].map((nid) => deliveredKey(2, nid, "email"));
    const many = Array.from({ length: 5 }, (_, i) => `m${i}|d`);
    await redis.hset(h2, "gone|d", "~claim@1");
    await Promise.all([w.setAll(h1, many, '{"outcome":"sent"}', 100), w.set(h2, "a|d", "A", 50), w.set(h2, "b|d", "B", 60), w.del(h2, "gone|d")]);
    t.same(await redis.hmget(h1, ...many), many.map(() => '{"outcome":"sent"}'), "each field of one value holds it");
    t.same(await redis.hgetall(h2), { "a|d": "A", "b|d": "B" }, "each field its own value; the deleted one is gone");
    const [t1, t2] = await Promise.all([redis.ttl(h1), redis.ttl(h2)]);
    t.ok(t1 > 90 && t1 <= 100 && t2 > 50 && t2 <= 60, `each hash lives the longest TTL asked (${t1}, ${t2})`);
    await w.set(h1, "m0|d", "again", 10);
    t.ok((await redis.ttl(h1)) > 90, "a shorter TTL never shortens a hash's life");
    const before = Date.now();
    await w.hold(h3, ["x|d", "y|d"], "~rel", 30);
    const held = await redis.hmget(h3, "x|d", "y|d");
    const deadline = Number(/^~rel@(\d+)$/.exec(held[0] ?? "")?.[1]);
    t.ok(held[1] === held[0] && deadline >= before + 29_000 && deadline <= Date.now() + 30_000, `a hold carries its deadline on Redis's clock (${held[0]})`);
  });

  t.test("Redis settings: the servers nfx starts free expiring keys in the background; a server that does not is named in a warning", async (t) => {
    const lines: string[] = [];
    const capture = createLogger({ level: "warn", redact: true }, { write: (l: string) => void lines.push(l) });
    const server = masterClients(redis)[0];
    t.same(await server.config("GET", "lazyfree-lazy-expire"), ["lazyfree-lazy-expire", "yes"], "started with lazyfree-lazy-expire yes");
    await warnRedisSettings(redis, capture);
    t.equal(lines.length, 0, "nothing to warn about");
    await server.config("SET", "lazyfree-lazy-expire", "no");
    t.teardown(() => server.config("SET", "lazyfree-lazy-expire", "yes"));
    await warnRedisSettings(redis, capture);
    t.equal(lines.length, 1, "one warning");
    t.match(JSON.parse(lines[0] ?? "{}"), { setting: "lazyfree-lazy-expire", value: "no", want: "yes" }, "naming the setting, its value and the one wanted");
  });

  t.test("a batch of two notifications, interleaved: each send's state read back in its own place", async (t) => {
    const ledger = new DeliveryLedger(redis, { claimTtlSec: TTL, deliveredTtlSec: 60 }, log);
    const [n1, n2] = [brief(), brief()];
    const sends: Send[] = [0, 1, 2, 3, 4, 5].map((i) => ({ nid: i % 2 ? n2.id : n1.id, user: `i${i}`, device: "d1", token: `il-${i}` }));
    const batch: SendBatch = { type: "send_batch", channel: "fcm", shard: 1, notifications: { [n1.id]: n1, [n2.id]: n2 }, sends };
    const k = (i: number): [string, string] => keyOf(sends[i].nid, sends[i].user, "d1");
    await redis.hset(...k(1), JSON.stringify({ outcome: "sent", at: 1, b: "someone" }));
    await claimed(k(2), "~other#1.x", 60);
    await claimed(k(3), "~gone#1.x", -1);
    await claimed(k(4), "~the-batch", 60);
    await claimed(k(5), "~elsewhere", 60);
    const l = await ledger.claim(batch, "fcm", "the-batch", "1.p");
    t.teardown(() => l.close());
    t.same(sends.map((_, i) => l.state(i).kind), ["mine", "recorded", "claimed", "mine", "mine", "claimed"], "free, recorded, claimed by another attempt, lapsed, held for this batch, held for another");
    const mine = await Promise.all([0, 3, 4].map((i) => get(k(i))));
    t.ok(mine.every((v) => /^~the-batch#1\.p@\d+$/.test(v ?? "")), `the free, lapsed and held ones now carry this attempt's claim (${mine.join(", ")})`);
    t.match(await get(k(2)), /^~other#1\.x@/, "another attempt's live claim is untouched");
    const all = { hashes: [deliveredKey(1, n1.id, "fcm"), deliveredKey(1, n2.id, "fcm")], fields: [[0, 2, 4], [1, 3, 5]].map((is) => is.map((i) => k(i)[1])) };
    const others = await Promise.all([1, 2, 5].map((i) => get(k(i))));
    t.equal(await new Claims(redis).renew(all, "~the-batch#1.p", 60), 3, "a renewal extends this attempt's three claims");
    t.same(await Promise.all([1, 2, 5].map((i) => get(k(i)))), others, "and leaves the record and the other claims as they were");
    const renewed = Number(/@(\d+)$/.exec((await get(k(0))) ?? "")?.[1]);
    t.ok(renewed > Date.now() + 50_000, "to the new deadline");
    void l.record(0, { outcome: "sent", at: 2 });
    l.hold([3, 2], "rel-1", Date.now() + 5000, Date.now());
    await l.written();
    t.match(JSON.parse((await get(k(0)))!), { outcome: "sent", at: 2 }, "recorded in its own field");
    t.match(await get(k(3)), /^~rel-1@\d+$/, "a held field moves to the release's hold");
    t.match(await get(k(2)), /^~other#1\.x@/, "a field this attempt does not own is not held");
  });

  t.test("an accepted send is recorded when its request answers, while the rest of its batch is still in flight", async (t) => {
    const id = rec.faults.add({ provider: "fcm", prefix: "late-", latencyMs: 4000 });
    const n = brief();
    await publish(n, [{ user: "q1", device: "d1", token: "quick-1" }, { user: "l1", device: "d1", token: "late-1" }], "mixed");
    const quick = keyOf(n.id, "q1", "d1");
    t.ok(await eventually(async () => (await get(quick))?.startsWith("{") ?? false, 3000), "the quick send's outcome is in Redis before the slow one answers");
    t.match(JSON.parse((await get(quick))!), { outcome: "sent" }, "as sent");
    t.match(await get(keyOf(n.id, "l1", "d1")), /^~/, "the slow one is still claimed");
    await sent(n.id, 2);
    rec.faults.remove({ id });
  });

  t.test("a dead attempt's claim lapses after claimTtlSec and its send goes out once", async (t) => {
    const n = brief();
    // An attempt that claimed the key and died (its claim is never renewed).
    await claimed(keyOf(n.id, "x1", "d1"), "~snd:dead#1.gone", TTL);
    await publish(n, [{ user: "x1", device: "d1", token: "dead-claim-1" }, { user: "x2", device: "d1", token: "free-1" }], "after-crash");
    await sent(n.id, 1);
    t.equal(calls("dead-claim-1"), 0, "while the dead claim holds, its send waits");
    await sent(n.id, 2);
    t.equal(calls("dead-claim-1"), 1, "then it went once");
    t.equal(calls("free-1"), 1, "the free one once");
  });

  t.test("an earlier delivery of the same message still holding its keys: this one waits, and the outcome that delivery records is reported once, counted", async (t) => {
    const n = brief();
    const batchId = "sibling-batch";
    // Delivery 1 of this message claimed the key, is slow (its server was lost), will record the send, and never publishes its receipts.
    await claimed(keyOf(n.id, "y1", "d1"), `~${batchId}#1.slow`, TTL);
    await publish(n, [{ user: "y1", device: "d1", token: "sibling-1" }], batchId);
    await new Promise((r) => setTimeout(r, 500));
    const tag = createHash("sha1").update(batchId).digest("base64url").slice(0, 8);
    await redis.hset(...keyOf(n.id, "y1", "d1"), JSON.stringify({ outcome: "sent", at: Date.now(), b: tag }));
    const got = await sent(n.id, 1);
    t.equal(got.length, 1, "one sent receipt");
    t.notOk(got[0].echo, "not an echo: this message's receipts are the only ones that report it, so it is counted");
    t.equal(calls("sibling-1"), 0, "not sent again");
  });

  t.test("a copy published again after its stream lost the first, which a gateway had sent and recorded without publishing its receipts: reported under the first id, counted, nothing sent twice; marked done", async (t) => {
    const n = brief();
    const first = "lost-batch";
    // The first delivery sent and recorded z1's send, then its receipts failed to publish and the stream lost the batch.
    const tag = createHash("sha1").update(first).digest("base64url").slice(0, 8);
    await redis.hset(...keyOf(n.id, "z1", "d1"), JSON.stringify({ outcome: "sent", at: Date.now(), b: tag }));
    t.equal(await redis.exists(sendBatchDoneKey(first)), 0, "the first was not marked done");
    await publish(n, [{ user: "z1", device: "d1", token: "copy-1" }, { user: "z2", device: "d1", token: "copy-2" }], MSGID.republished(first, 1));
    const got = await sent(n.id, 2);
    t.same(got.map((r) => r.user).sort(), ["z1", "z2"], "both sends reported");
    t.notOk(got.some((r) => r.echo), "neither an echo: the first's record is the copy's own, so it is counted");
    t.equal(calls("copy-1"), 0, "the recorded send not sent again");
    t.equal(calls("copy-2"), 1, "the other sent once");
    t.ok(await eventually(async () => (await redis.exists(sendBatchDoneKey(first))) === 1), "done, under the first id");
  });
});
