// A webhook endpoint's queue in Redis (one redis-server, and a Redis Cluster): finishing stops at the first delivery that is not the head and counts each once; letting go of an empty endpoint clears it and its lease; holds for direct delivery, what it records, history trimmed once over its size, deliveries handed back to the front.
import t, { type Test } from "tap";

import type { Config } from "../../lib/core/config.js";
import { endpointHistoryKey, endpointLeaseKey, ENDPOINTS_ACTIVE_KEY } from "../../lib/core/keys.js";
import { EndpointQueues, type HistoryEntry, type QueuedDelivery } from "../../lib/flow/endpoint-queues.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

const item = (i: number): { id: string; d: QueuedDelivery } => ({ id: `d${i}`, d: { nid: `n${i}`, type: "t", shard: 0, at: i } });
const entry = (id: string, outcome: HistoryEntry["outcome"], status: number): HistoryEntry => ({ id, nid: `n${id.slice(1)}`, type: "t", outcome, status, attempts: 1, at: 7 });

async function check(t: Test, mode: "single" | "cluster"): Promise<void> {
  const servers = await startServers(t, { redis: mode });
  const cfg: Config = servers.config();
  const { redis } = await clientsFor(t, cfg);
  const q = new EndpointQueues(redis, cfg.endpoints);
  const ep = "ep_queue_test";
  t.equal(await q.enqueue(ep, [0, 1, 2, 3, 4].map(item)), 5, "five queued");

  // A failed attempt starts a streak; finishing d0 (delivered), d1 (failed), then d9 (not the head) and d3 stops at d9.
  await q.fail(ep, 100, 200, 503, "boom", 1);
  t.equal(await q.settleMany(ep, [entry("d0", "delivered", 200), entry("d1", "failed", 400), entry("d9", "delivered", 200), entry("d3", "delivered", 200)], 300), 2, "finishing stops at the first id that is not the head");
  const st = await q.state(ep);
  t.match(st, { pending: 3, delivered: 1, failed: 1, attempts: 0, last_status: 400, last_at: 300, consecutive_failures: 0 }, "counts, last status and the streak ended by a delivery");
  t.notOk(st.failing_since, "the streak's start is forgotten");
  t.same((await q.history(ep, 10)).map((h) => h.id), ["d1", "d0"], "history, newest first");
  t.same((await q.head(ep, 10)).map((x) => x.id), ["d2", "d3", "d4"], "the queue goes on at d2");
  // One item shared by two endpoints and another of its own: each endpoint's queue holds each item in order.
  const shared = item(7).d;
  t.equal(await q.enqueueMany(new Map([["ep_a", [{ id: "s1", d: shared }, item(8)]], ["ep_b", [{ id: "s2", d: shared }]]])), 3, "three queued in one call");
  t.same(await q.head("ep_a", 5), [{ id: "s1", d: shared }, item(8)], "the first endpoint's items, in order");
  t.same(await q.head("ep_b", 5), [{ id: "s2", d: shared }], "the second's");
  t.equal(await q.settle(ep, entry("d0", "delivered", 200), 400), false, "a delivery finished twice counts once");
  t.equal(await q.enqueue(ep, [item(0)]), 0, "a finished delivery is not queued again");

  // A failed delivery leaves a streak as it was.
  await q.fail(ep, 500, 600, 500, "down", 1);
  t.equal(await q.settleMany(ep, [entry("d2", "failed", 500)], 700), 1, "d2 failed for good");
  t.match(await q.state(ep), { failed: 2, consecutive_failures: 1, failing_since: 500, attempts: 0 }, "a final failure keeps the streak");

  // Letting go: not while deliveries wait; once empty, the endpoint leaves the active set and (one server) the lease goes with it.
  t.ok(await q.lease(ep, "me", "take"), "leased");
  t.same(await q.deactivateIfEmpty(ep, "me"), { active: true, released: false }, "deliveries wait: stays active, lease kept");
  t.ok(await redis.sismember(ENDPOINTS_ACTIVE_KEY, ep), "still in the active set");
  t.equal(await redis.get(endpointLeaseKey(ep)), "me", "still leased");
  t.equal(await q.settleMany(ep, [entry("d3", "delivered", 200), entry("d4", "delivered", 200)], 800), 2, "the rest delivered");
  const idle = await q.deactivateIfEmpty(ep, "me");
  t.same(idle, { active: false, released: mode === "single" }, "empty: let go");
  t.notOk(await redis.sismember(ENDPOINTS_ACTIVE_KEY, ep), "no longer in the active set");
  if (!idle.released) t.ok(await q.lease(ep, "me", "release"), "released by the caller on a cluster");
  t.equal(await redis.get(endpointLeaseKey(ep)), null, "the lease is free");
  t.equal(await q.enqueue(ep, [item(5)]), 1, "a new delivery");
  t.ok(await redis.sismember(ENDPOINTS_ACTIVE_KEY, ep), "marks it active again");
  // Another process's lease is left alone.
  await q.settleMany(ep, [entry("d5", "delivered", 200)], 900);
  t.ok(await q.lease(ep, "other", "take"), "another process leases it");
  t.same(await q.deactivateIfEmpty(ep, "me"), { active: false, released: mode === "single" }, "empty again");
  t.equal(await redis.get(endpointLeaseKey(ep)), "other", "another owner's lease is not released");

  // Direct delivery: an endpoint is held for it only with nothing queued, not paused, no retry due later, its lease free or the caller's.
  const [free, queued, paused, backing, leased] = ["dx_free", "dx_queued", "dx_paused", "dx_backing", "dx_leased"];
  await q.enqueue(queued, [item(20)]);
  await q.pause(paused, "by a test", 1000);
  await q.fail(backing, 1000, Date.now() + 60_000, 503, "down", 1);
  await q.lease(leased, "other", "take");
  t.same(await q.direct([free, queued, paused, backing, leased], "me", "take", Date.now()), [true, false, false, false, false], "only the free endpoint is taken");
  t.equal(await redis.get(endpointLeaseKey(free)), "me", "taking it leases it to the caller");
  t.same(await q.direct([free, leased], "me", "renew", Date.now()), [true, false], "renewed only where the lease is the caller's");
  await q.pause(free, "by an operator", 2000);
  t.same(await q.direct([free], "me", "renew", Date.now()), [false], "an operator's pause ends the hold");
  await q.resume(free);
  await q.enqueue(free, [item(40)]);
  await redis.pexpire(endpointLeaseKey(free), 1000);
  t.same(await q.direct([free], "me", "renew", Date.now()), [false], "a delivery queued for it (another process's) ends direct delivery");
  t.ok((await redis.pttl(endpointLeaseKey(free))) > 1000, "but the lease is still extended, for the caller to hand the queue on in order");
  await q.settleMany(free, [entry("d40", "delivered", 200)], 2500);
  // What was posted directly is recorded: counts, last answer, the streak ended by a delivery, history.
  await q.fail(free, 3000, 3000, 500, "once", 1);
  await q.recordDirect(new Map([[free, { delivered: 2, failed: 1, lastStatus: 200, history: [entry("d30", "delivered", 200), entry("d31", "failed", 400), entry("d32", "delivered", 200)] }], [queued, { delivered: 1, failed: 0, lastStatus: 204, history: [entry("d33", "delivered", 204)] }]]), 4000);
  t.match(await q.state(free), { pending: 0, delivered: 3, failed: 1, last_status: 200, last_at: 4000, consecutive_failures: 0 }, "counted, the streak ended");
  t.same((await q.history(free, 3)).map((h) => h.id), ["d32", "d31", "d30"], "its history, newest first");
  t.match(await q.state(queued), { pending: 1, delivered: 1, last_status: 204 }, "two endpoints recorded in one call");
  // History: read back up to `historyPerEndpoint`; Redis holds a quarter more (at least 16) before a trim, by either path.
  const small = new EndpointQueues(redis, { ...cfg.endpoints, historyPerEndpoint: 20 });
  const hep = "ep_history_test";
  const lens: number[] = [];
  for (let i = 0; i < 40; i++) {
    await small.recordDirect(new Map([[hep, { delivered: 1, failed: 0, lastStatus: 200, history: [entry(`d${100 + i}`, "delivered", 200)] }]]), 5000 + i);
    lens.push(await redis.llen(endpointHistoryKey(hep)));
  }
  t.same(lens.slice(34), [35, 36, 20, 21, 22, 23], "trimmed back to 20 once over 36");
  t.same((await small.history(hep, 1000)).map((h) => h.id), Array.from({ length: 20 }, (_, k) => `d${139 - k}`), "the newest 20, however many are asked for");
  const hq = "ep_history_queue_test";
  await small.enqueue(hq, Array.from({ length: 40 }, (_, i) => item(200 + i)));
  for (let i = 0; i < 40; i++) await small.settleMany(hq, [entry(`d${200 + i}`, "delivered", 200)], 6000 + i);
  t.equal(await redis.llen(endpointHistoryKey(hq)), 23, "the queue's path trims alike");
  t.same((await small.history(hq, 5)).map((h) => h.id), ["d239", "d238", "d237", "d236", "d235"]);
  // Deliveries handed back go ahead of what the queue holds, in their order.
  t.equal(await q.enqueueMany(new Map([[queued, [item(21), item(22)]]]), false, true), 2, "two handed back");
  t.same((await q.head(queued, 5)).map((x) => x.id), ["d21", "d22", "d20"], "at the front, in order");
}

t.test("on one redis-server", (t) => check(t, "single"));
t.test("on a Redis Cluster", (t) => check(t, "cluster"));
