// Leases on a real JetStream KV with a fake clock: one holder, takeover after expiry, a stale holder is fenced.
import t from "tap";

import { BUCKET } from "../../lib/core/subjects.js";
import { Lease } from "../../lib/flow/lease.js";
import { ensureTopology } from "../../lib/infra/topology.js";
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
