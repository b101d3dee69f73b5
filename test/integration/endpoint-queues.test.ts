// A webhook endpoint's queue in Redis (one redis-server, and a Redis Cluster): finishing stops at the first delivery that is not the head and counts each once; letting go of an empty endpoint clears it and its lease.
import t, { type Test } from "tap";

import type { Config } from "../../lib/core/config.js";
import { endpointLeaseKey,ENDPOINTS_ACTIVE_KEY } from "../../lib/core/keys.js";
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
}

t.test("on one redis-server", (t) => check(t, "single"));
t.test("on a Redis Cluster", (t) => check(t, "cluster"));
