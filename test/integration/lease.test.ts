// Leases on a real JetStream KV with a fake clock: one holder, takeover after expiry, a stale holder is fenced; shard checkpoints stored in parts.
import t from "tap";

import { BUCKET, checkpointKey, checkpointPartKey } from "../../lib/core/subjects.js";
import { Lease } from "../../lib/flow/lease.js";
import { ensureTopology } from "../../lib/infra/topology.js";
import { CheckpointStore, startPositions } from "../../lib/shard/shard-checkpoint.js";
import { clientsFor } from "../helpers/cluster.js";
import { startServers } from "../helpers/servers.js";

t.test("lease: exclusive, expires, fences the stale holder", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats } = await clientsFor(t, cfg);
  await ensureTopology(nats, cfg);
  const kv = await nats.kvm.open(BUCKET.leases);
  let clock = 1_000_000;
  const now = () => clock;

  const a = await Lease.acquire(kv, "x", "A", 3000, now);
  t.ok(a, "A takes a free lease");
  t.equal(await Lease.acquire(kv, "x", "B", 3000, now), null, "B cannot take it while A holds it");
  clock += 2000;
  t.ok(await a!.renew(), "A renews before expiry");
  clock += 2500;
  t.equal(await Lease.acquire(kv, "x", "B", 3000, now), null, "the renewal pushed expiry out: still A's");
  clock += 4000; // A stops renewing (paused, partitioned)
  t.notOk(a!.valid, "by its own clock A knows it has lapsed");
  const b = await Lease.acquire(kv, "x", "B", 3000, now);
  t.ok(b, "B takes the expired lease");
  clock -= 4000; // A's clock says it is still fine, e.g. it was paused and resumes believing it holds the lease
  t.notOk(await a!.renew(), "A's renewal fails: the revision moved (fenced)");
  t.ok(a!.lost, "A knows it lost the lease");
  clock += 4000;
  t.ok(await b!.renew(), "B keeps it");
  await b!.release();
  t.ok(await Lease.acquire(kv, "x", "C", 3000, now), "a released lease is free at once");
});

t.test("checkpoint in parts: read back whole; the previous generation's parts are dropped when a new one is published", async (t) => {
  const servers = await startServers(t);
  const cfg = servers.config();
  const { nats } = await clientsFor(t, cfg);
  await ensureTopology(nats, cfg);
  const kv = await nats.kvm.open(BUCKET.checkpoints);
  const store = new CheckpointStore(kv, "bulk");
  const key = checkpointKey("bulk", 7);
  /** How many of generation `gen`'s 4 parts are stored (a dropped part leaves only its purge marker). */
  const partsOf = async (gen: string | undefined): Promise<number> => {
    let n = 0;
    for (let i = 0; i < 4; i++) if ((await kv.get(checkpointPartKey(key, gen!, i)))?.operation === "PUT") n++;
    return n;
  };
  // A dedup window of 100,000 entries (16 bytes each, 1.6 MB): four parts of 512 KB.
  const dedup = Buffer.alloc(4 + 100_000 * 16);
  dedup.writeUInt32LE(100_000, 0);
  for (let i = 4; i < dedup.length; i += 4) dedup.writeUInt32LE(i * 2654435761 >>> 0, i);
  const buckets = Buffer.alloc(4);
  const cp = (epoch: number) => ({ owner: "A", epoch, at: 1000 + epoch, pos: { ...startPositions(), bulk: epoch }, dedup, buckets });
  const w1 = await store.write(7, cp(1), 0);
  t.equal(await partsOf(w1.gen), 4, "the first checkpoint is stored in 4 parts");
  const back = await store.load(7);
  t.ok(back.cp && Buffer.compare(back.cp.dedup, dedup) === 0 && back.cp.pos.bulk === 1, "read back whole, positions included");
  const w2 = await store.write(7, cp(2), w1.rev, w1.gen);
  await new Promise((r) => setTimeout(r, 500)); // the old parts are dropped after the manifest moved on, without waiting
  t.equal(await partsOf(w1.gen), 0, "the first generation's parts are dropped");
  t.equal(await partsOf(w2.gen), 4, "the second generation's 4 parts are stored");
  t.equal((await store.load(7)).cp?.pos.bulk, 2, "the second checkpoint is the one read");
});
