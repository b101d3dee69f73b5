// Redis Cluster: a real cluster (three masters, a replica each) refuses cross-slot commands, every key family works on it through the code that uses it, and a master's failover is ridden out.
import { Writable } from "node:stream";

import t from "tap";

import { StoreUnavailable } from "../../lib/core/errors.js";
import { deliveredField, deliveredKey, engagedKey, lastActiveKey, presenceKey, segmentBuildingKey, segmentKey, userIndexKey, userKey, userLogKey } from "../../lib/core/keys.js";
import { createLogger } from "../../lib/core/log.js";
import { shardOf } from "../../lib/core/shard-hash.js";
import type { ReceiptEntry, SendBatch, UserRecord } from "../../lib/core/types.js";
import { getUser, readUsers, removeDeadToken, updatePreferences, writeUsers } from "../../lib/directory/directory.js";
import { countSegment, defineSegment, listSegments, rangeIds, scanActive, scanIds, segmentSource } from "../../lib/directory/segments.js";
import { changeUserSubscriptions, putTopic } from "../../lib/directory/topics.js";
import { Claims } from "../../lib/gateway/delivery-claims.js";
import { DeliveryLedger } from "../../lib/gateway/delivery-ledger.js";
import { changedSince } from "../../lib/gateway/send-recheck.js";
import { Broadcasts } from "../../lib/inapp/broadcasts.js";
import { Inbox } from "../../lib/inapp/inbox.js";
import { presenceReader, PresenceWriter } from "../../lib/inapp/presence.js";
import { freePort } from "../../lib/infra/launch.js";
import { connectRedis, hashTagOf, isCluster, masterClients, slotGroups } from "../../lib/infra/redis.js";
import { withScripts } from "../../lib/infra/scripts.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { CollapseClaims } from "../../lib/shard/collapse-claims.js";
import { addBounces, areBounced, clearBounce } from "../../lib/tracking/bounces.js";
import { type EngagementEvent, engagementFor } from "../../lib/tracking/engagement.js";
import { UserLog } from "../../lib/tracking/user-log.js";
import { clientsFor, eventually } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const DAY = 86_400_000;

t.test("nfx on a real Redis Cluster", async (t) => {
  const servers = await startServers(t, { redis: "cluster" });
  const rc = servers.redisCluster!;
  const cfg = servers.config();
  const { nats, redis } = await clientsFor(t, cfg);
  await ensureTopology(nats, cfg);
  const log = createLogger({ level: "silent", redact: true });
  const shards = cfg.cluster.shards;
  const now = Date.now();
  // 240 users over (nearly) every shard: half active this week, every third a VIP with an email address.
  const users: UserRecord[] = Array.from({ length: 240 }, (_, i) => ({
    id: `cu${i}`,
    lastActive: i % 2 === 0 ? now - DAY : now - 60 * DAY,
    ...(i % 3 === 0 ? { attributes: { vip: true }, email: `cu${i}@example.com` } : {}),
    devices: [{ id: "phone", platform: "ios" as const, token: `tok-cu${i}` }, { id: "tab", platform: "android" as const, token: `ftok-cu${i}` }],
  }));
  const ids = users.map((u) => u.id);
  const byShard = new Map<number, string[]>();
  for (const id of ids) byShard.set(shardOf(id, shards), [...(byShard.get(shardOf(id, shards)) ?? []), id]);
  const someShards = [...byShard.keys()].slice(0, 8);

  await t.test("the cluster is real: six nodes, three masters, and a command over two slots fails", async (t) => {
    t.ok(isCluster(redis), "connectRedis opened a cluster client for redis.cluster");
    t.equal(servers.redisSeeds.length, 6, "six seed nodes");
    t.equal((await rc.masters()).length, 3, "three masters");
    t.equal(masterClients(redis).length, 3, "the client sees three masters");
    const a = userKey(0, "x");
    const b = userKey(1, "x");
    t.not(hashTagOf(a), hashTagOf(b), "two shards' keys have different hash tags");
    // Sent to a node as it is, without the client's own checks: the server refuses.
    await t.rejects(masterClients(redis)[0].mget(a, b), /CROSSSLOT/, "MGET of two shards' keys: CROSSSLOT from the server");
    await t.rejects(withScripts(redis).nfxExistsAll(2, a, b), /CROSSSLOT/, "a script given two shards' keys: CROSSSLOT");
    await t.rejects(withScripts(redis).nfxUserLogAppend(2, userLogKey(0, "x"), userLogKey(1, "x"), 10, DAY, 1, "a", 2, "b"), /CROSSSLOT/, "the user log as it was appended before (one call over many shards): CROSSSLOT");
    const p = redis.pipeline();
    for (let s = 0; s < 16; s++) p.set(userKey(s, "x"), "1");
    await t.rejects(p.exec(), /slot/, "one explicit pipeline over the keys of several nodes (writeUsers before): refused");
    t.same(slotGroups(redis, [a, userKey(0, "y"), b]), [[0, 1], [2]], "slotGroups: one group per hash tag on a cluster");
  });

  await t.test("directory: write, read per shard at once, index scans, preferences with the changed set, dead tokens", async (t) => {
    await writeUsers(redis, shards, users);
    const read = await Promise.all([...byShard].map(async ([s, list]) => [list, await readUsers(redis, s, list, { profile: true })] as const));
    t.same(read.flatMap(([list, recs]) => recs.map((r, i) => r?.id === list[i] && r.devices.length === 2)).filter((ok) => !ok), [], "every user read back from its shard (one MGET per shard, all shards in one tick)");
    t.equal((await getUser(redis, shards, "cu3"))?.email, "cu3@example.com", "profile read with the record");
    const perShard = await Promise.all([...byShard.keys()].map(async (s) => [(await scanIds(redis, userIndexKey(s), null, 1000)).length, (await scanActive(redis, s, null, null, 1000, now - 7 * DAY)).ids.length]));
    const listed = perShard.reduce((a, [n]) => a + n, 0);
    const active = perShard.reduce((a, [, n]) => a + n, 0);
    t.equal(listed, users.length, "every user in its shard's index");
    t.equal(active, users.length / 2, "active this week: filtered in one script over the index and last-activity hash of a shard");
    const [s0, list0] = [...byShard][0];
    const sorted = [...list0].sort();
    t.same(await rangeIds(redis, userIndexKey(s0), null, sorted[sorted.length - 1]), sorted, "a chunk range replays in id order");
    t.equal(Number(await redis.hget(lastActiveKey(s0), list0[0])), users.find((u) => u.id === list0[0])!.lastActive, "last activity kept per shard");

    const changedUsers = someShards.map((s) => byShard.get(s)![0]);
    const before = Date.now() - 1;
    const updated = await Promise.all(changedUsers.map((u) => updatePreferences(redis, nats.nc, shards, u, { categories: { marketing: { push: false } } })));
    t.ok(updated.every((u) => u?.preferences?.categories?.marketing?.push === false), "preferences updated atomically on users of eight shards at once");
    const changed = await Promise.all(
      changedUsers.map((u) => changedSince(redis, { type: "send_batch", channel: "apns", shard: shardOf(u, shards), notifications: {}, sends: [], decidedAt: before }, [u, ...byShard.get(shardOf(u, shards))!.slice(1, 3)])),
    );
    t.same(changed.map((m) => [...m.keys()]), changedUsers.map((u) => [u]), "the changed set of each shard names exactly the changed user");
    t.ok(await removeDeadToken(redis, nats.nc, shards, "cu7", "tab", "ftok-cu7"), "a dead token's device removed");
    t.same((await getUser(redis, shards, "cu7"))?.devices.map((d) => d.id), ["phone"], "and the other kept");
  });

  await t.test("segments: built aside and renamed within each shard's slot, counted, listed", async (t) => {
    const vips = users.filter((u) => u.attributes?.vip).length;
    t.equal((await defineSegment(redis, shards, "vip", { attributes: { vip: true } }, now)).members, vips, "every VIP a member");
    t.equal((await defineSegment(redis, shards, "vip", { attributes: { vip: true }, activeDays: 7 }, now)).members, users.filter((u, i) => u.attributes?.vip && i % 2 === 0).length, "redefined: each shard's set replaced by RENAME");
    t.equal(await redis.exists(...[...byShard.keys()].slice(0, 1).map((s) => segmentBuildingKey(s, "vip"))), 0, "nothing left aside");
    t.equal(await countSegment(redis, shards, "vip", now), users.filter((u, i) => u.attributes?.vip && i % 2 === 0).length, "counted by its sets");
    t.same((await listSegments(redis)).map((d) => d.name), ["vip"], "its definition listed");
    const src = await segmentSource(redis, "vip", now);
    t.equal(src.key(3), segmentKey(3, "vip"), "a campaign reads the shard's set");
    t.equal(await countSegment(redis, shards, "active_7d", now), users.length / 2, "a built-in segment counted over every shard");
  });

  await t.test("presence: one writer's keys over every shard, read per shard in one tick", async (t) => {
    const read = presenceReader(redis);
    const w = new PresenceWriter({ nats, redis, log, shards, gateway: "gw-c", ttlMs: 30_000 });
    const online = ids.slice(0, 120);
    await Promise.all(online.map((u) => w.connected(u)));
    const seen = async (): Promise<Set<string>> => {
      const got = await Promise.all([...byShard].map(async ([s, list]) => (await read(s, list)).flatMap((on, i) => (on ? [list[i]] : []))));
      return new Set(got.flat());
    };
    t.same([...(await seen())].sort(), [...online].sort(), "exactly the connected users are present (one script per shard, all in one tick)");
    t.equal(await redis.hget(presenceKey(shardOf("cu0", shards), "cu0"), "gw-c"), "1", "a presence key holds the gateway's connections");
    await w.refresh();
    for (const u of online.slice(0, 60)) w.disconnected(u);
    t.ok(await eventually(async () => (await seen()).size === 60, 5000), "the users who left are gone");
    await w.close();
    t.equal((await seen()).size, 0, "a clean close removes every user it held");
  });

  await t.test("inbox: add, list, mark and settle for users of many shards at once", async (t) => {
    const inbox = new Inbox(redis, { shards, cap: 50, retentionMs: DAY });
    const who = someShards.map((s) => byShard.get(s)![0]);
    const item = (nid: string, at: number) => ({ id: nid, at, category: "transactional", priority: "normal" as const, title: nid, payload: {} });
    const added = await Promise.all(who.flatMap((u) => [1, 2, 3].map((k) => inbox.add(u, item(`n_${k}`, now + k)))));
    t.ok(added.every((r) => r === "new"), "24 items stored");
    t.ok((await Promise.all(who.map((u) => inbox.add(u, item("n_1", now + 1))))).every((r) => r === "pending"), "a replayed send is not stored twice");
    const lists = await Promise.all(who.map((u) => inbox.list(u, 10)));
    t.ok(lists.every((l) => l.unread === 3 && l.items.map((i) => i.id).join() === "n_3,n_2,n_1"), "newest first, three unread each");
    const marked = await Promise.all(who.map((u) => inbox.mark(u, "read", ["n_1", "n_2"])));
    t.ok(marked.every((m) => m.unread === 1 && m.changed.length === 2), "two read each");
    const settled = await Promise.all(who.map((u, i) => inbox.settle(u, "n_3", i % 2 ? "acked" : "fallback")));
    t.ok(settled.every((s) => s === "pending"), "the first transition wins");
    t.ok((await Promise.all(who.map((u) => inbox.settle(u, "n_3", "acked")))).every((s, i) => s === (i % 2 ? "acked" : "fallback")), "and only the first");
  });

  await t.test("broadcasts: stored once, merged into inboxes of users of many shards, marked per user", async (t) => {
    const store = new Broadcasts(redis, { shards, max: 10, refreshMs: 0, retentionMs: DAY });
    const inbox = new Inbox(redis, { shards, cap: 50, retentionMs: DAY, broadcasts: store });
    const who = someShards.map((s) => byShard.get(s)![0]);
    await putTopic(redis, "bcast", undefined);
    await changeUserSubscriptions(redis, shards, "bcast", who.slice(0, 4));
    const b = { id: "n_bc", at: now, expiresAt: now + DAY, category: "social", segment: "topic:bcast", item: { id: "n_bc", at: now, category: "social", priority: "normal" as const, payload: {} } };
    t.equal(await store.store(b), true, "the record and its index entry stored in one script ({bc} slot)");
    t.equal(await store.store(b), false, "and not twice");
    const lists = await Promise.all(who.map((u) => inbox.list(u, 10)));
    t.same(lists.map((l) => l.items.some((i) => i.id === "n_bc")), who.map((_, i) => i < 4), "members of the topic (four shards) see it, the others not");
    const marked = await Promise.all(who.slice(0, 4).map((u) => inbox.mark(u, "read", ["n_bc"])));
    t.ok(marked.every((m) => m.changed.join() === "n_bc"), "each member's read state stored in their own slot");
    await store.withdraw("n_bc");
    t.same(await store.get("n_bc"), null, "withdrawn");
  });

  await t.test("provider events seen once (webhook idempotency), engagement counted once, bounces", async (t) => {
    const eng = engagementFor(cfg, nats, redis);
    const evIds = Array.from({ length: 100 }, (_, i) => `sg-${i}`);
    t.ok((await eng.firstTimes(evIds, "sg")).every(Boolean), "100 event ids seen for the first time");
    t.ok((await eng.firstTimes(evIds, "sg")).every((f) => !f), "and not again");
    await eng.forget(evIds.slice(0, 40), "sg");
    t.same((await eng.firstTimes(evIds, "sg")).map((f, i) => f === i < 40), evIds.map(() => true), "forgotten ids (keys of 40 slots) count again, the others not");

    const events = Array.from({ length: 30 }, (_, i): EngagementEvent => ({ kind: i % 3 === 0 ? "clicked" : "opened", nid: `n_eng${i % 10}`, user: ids[i], channel: "apns", at: now }));
    const counted = await eng.record(events);
    t.equal(counted, 30 + 10, "every open, and every click with the open it implies (20 engagement hashes, no hash tag: one script call each)");
    t.equal(await eng.record(events), 0, "a repeat counts nothing");
    t.ok(await redis.hexists(engagedKey("n_eng0", "clicked"), ids[0]), "the first click is kept per recipient");

    await addBounces(redis, ["Bad@Example.com", "gone@example.com"]);
    t.same(await areBounced(redis, ["bad@example.com", "ok@example.com", "GONE@example.com"]), [true, false, true], "bounced addresses, case-insensitively");
    t.ok(await clearBounce(redis, "bad@example.com"), "cleared");
  });

  await t.test("user log: a notification's entries over every shard in one pipeline, replays kept once", async (t) => {
    const ul = new UserLog(redis, shards);
    const entries: ReceiptEntry[] = ids.map((u, i) => ({ user: u, outcome: "sent", channel: "apns", device: "phone", at: now + i }));
    const res = await ul.append("n_log", entries).exec();
    t.ok(res && res.length > 0 && res.every(([err]) => err === null), `appended with ${res?.length} script calls, none failed`);
    await ul.append("n_log", entries).exec();
    const logs = await Promise.all(ids.map((u) => ul.read(u)));
    t.ok(logs.every((l, i) => l.length === 1 && l[0].notification === "n_log" && l[0].at === now + i), "each user has the entry once");
  });

  await t.test("delivery ledger and collapse claims: batches of several shards claimed, renewed, recorded at once", async (t) => {
    const ledger = new DeliveryLedger(redis, { claimTtlSec: 30, deliveredTtlSec: 60 }, log);
    const batches: SendBatch[] = someShards.map((s) => ({ type: "send_batch", channel: "apns", shard: s, notifications: {}, sends: byShard.get(s)!.map((u) => ({ nid: "n_dl", user: u, device: "phone", token: `tok-${u}` })) }));
    const first = await Promise.all(batches.map((b) => ledger.claim(b, "apns", `b-${b.shard}`, "1")));
    t.ok(first.every((l, j) => batches[j].sends.every((_, i) => l.state(i).kind === "mine")), "every key claimed by its batch (one script per batch, all in one tick)");
    const rival = await Promise.all(batches.map((b) => ledger.claim(b, "apns", `other-${b.shard}`, "1")));
    t.ok(rival.every((l, j) => batches[j].sends.every((_, i) => l.state(i).kind === "claimed")), "another batch finds them claimed");
    rival.forEach((l) => l.close());
    const claims = new Claims(redis);
    const keysOf = (b: SendBatch): { hashes: string[]; fields: string[][] } => ({ hashes: [deliveredKey(b.shard, "n_dl", "apns")], fields: [b.sends.map((s) => deliveredField(s.user, s.device))] });
    t.same(await Promise.all(batches.map((b) => claims.renew(keysOf(b), `~b-${b.shard}#1`, 30))), batches.map((b) => b.sends.length), "renewed: every key still held");
    first.forEach((l, j) => batches[j].sends.forEach((_, i) => void l.record(i, { outcome: "sent", at: now })));
    await Promise.all(first.map((l) => l.written()));
    first.forEach((l) => l.close());
    const again = await Promise.all(batches.map((b) => ledger.claim(b, "apns", `b-${b.shard}`, "2")));
    t.ok(again.every((l, j) => batches[j].sends.every((_, i) => { const st = l.state(i); return st.kind === "recorded" && st.record.outcome === "sent"; })), "outcomes recorded in one turn's writes over every node");
    const ttl = await redis.ttl(keysOf(batches[1]).hashes[0]);
    t.ok(ttl > 30 && ttl <= 60, `recorded with deliveredTtlSec (${ttl} s left)`);
    await Promise.all(again.map((l) => l.release(0)));
    again.forEach((l) => l.close());
    t.equal(await redis.hexists(keysOf(batches[0]).hashes[0], keysOf(batches[0]).fields[0][0]), 0, "a released key is gone");

    const cc = new CollapseClaims(redis, 60_000);
    const held = await Promise.all(someShards.map((s) => cc.claim(s, "order-7", "n_c1", byShard.get(s)!)));
    t.ok(held.every((h) => h.every((x) => !x)), "a collapse key claimed for users of eight shards at once");
    const second = await Promise.all(someShards.map((s) => cc.claim(s, "order-7", "n_c2", byShard.get(s)!)));
    t.ok(second.every((h) => h.every(Boolean)), "a second notification finds it held");
    await Promise.all(someShards.map((s) => cc.release(s, "order-7", "n_c1", byShard.get(s)!)));
    t.ok((await Promise.all(someShards.map((s) => cc.claim(s, "order-7", "n_c2", byShard.get(s)!)))).every((h) => h.every((x) => !x)), "released: free for the next");
  });

  await t.test("the keys are spread over all three masters", async (t) => {
    const sizes = await Promise.all(masterClients(redis).map((m) => m.dbsize()));
    t.ok(sizes.every((n) => n > 100), `keys per master: ${sizes.join(", ")}`);
  });

  await t.test("a master SIGKILLed: its replica takes over, writes carry on, the node restarted rejoins as a replica", async (t) => {
    const before = await rc.masters();
    const victim = rc.nodes.find((n) => n.port === before[0])!;
    victim.proc.kill("SIGKILL");
    const t0 = Date.now();
    // Every shard is written, so a third of the commands wait for the failover (retried by the client, not failed).
    await writeUsers(redis, shards, users);
    t.pass(`every user rewritten across the failover (${Date.now() - t0} ms)`);
    // The node asked may hear of the promotion a moment after the client's writes went through (cluster gossip).
    let after: number[] = [];
    t.ok(await eventually(async () => (after = await rc.masters()).length === 3, 15_000), `three masters again (${after.join(", ")})`);
    t.notOk(after.includes(victim.port), "the killed node is no master");
    await victim.start();
    await rc.waitHealthy();
    t.notOk((await rc.masters()).includes(victim.port), "restarted, it rejoined as a replica");
    const read = await Promise.all([...byShard].map(([s, list]) => readUsers(redis, s, list)));
    t.equal(read.flat().filter((u) => u !== null).length, users.length, "every user readable afterwards");
  });

  await t.test("connecting: unreachable seeds are StoreUnavailable naming redis.cluster; a role waits for a cluster that comes back", async (t) => {
    const nowhere = { ...cfg, redis: { ...cfg.redis, cluster: [`redis://127.0.0.1:${await freePort()}`] } };
    const err = await connectRedis(nowhere, log).then(() => null, (e: unknown) => e);
    t.type(err, StoreUnavailable, "refused");
    t.equal((err as StoreUnavailable).field, "redis.cluster", "naming the field");
    t.match((err as Error).message, /^redis\.cluster: cannot connect to redis:\/\/127\.0\.0\.1:\d+: /, "and the seeds");

    let lines = "";
    const sink = new Writable({ write: (c: Buffer, _e, cb) => ((lines += c.toString()), cb()) });
    await Promise.all(rc.nodes.map((n) => n.stop()));
    let ready = false;
    const waiting = connectRedis(cfg, createLogger({ level: "warn", redact: true }, sink), { waitForServer: true }).then((r) => ((ready = true), r));
    t.ok(await eventually(() => /redis not reachable yet, waiting/.test(lines), 10_000), "with every node down, a role logs that it waits");
    t.notOk(ready, "and is not ready");
    for (const n of rc.nodes) await n.start();
    await rc.waitHealthy();
    const back = await waiting;
    t.teardown(() => back.disconnect());
    t.ok(isCluster(back), "ready once the cluster is back");
    await writeUsers(back, shards, users.slice(0, 20));
    t.equal((await getUser(back, shards, users[0].id))?.id, users[0].id, "and it serves");
  });
});
