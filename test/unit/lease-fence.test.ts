// The one fence of a lease holder (Lease.fence in lib/flow/lease.ts): passes while the lease is valid, else throws the coded Fenced error. No servers: a minimal KV stands in.
import type { KV } from "@nats-io/kv";
import t from "tap";

import { Fenced } from "../../lib/core/errors.js";
import { Lease } from "../../lib/flow/lease.js";

/** Just enough KV for acquire and release: an empty key, created at revision 7. */
const kv = { get: async () => null, create: async () => 7, update: async () => 8, delete: async () => undefined } as unknown as KV;

t.test("fence passes while valid, throws Fenced once the lease expired on the clock or was given up", async (t) => {
  let now = 1_000;
  const lease = await Lease.acquire(kv, "shard.3", "me", 10_000, () => now);
  t.ok(lease);
  t.teardown(() => void lease!.release());
  t.doesNotThrow(() => lease!.fence("shard 3"), "a valid lease passes");
  now += 10_000;
  const err = t.throws(() => lease!.fence("shard 3")) as unknown as Fenced;
  t.type(err, Fenced);
  t.equal(err.code, "NFX_ERR_FENCED");
  t.equal(err.message, "shard 3: lease 7 is gone", "names the holder and the revision");
  now = 1_000;
  await lease!.release();
  t.throws(() => lease!.fence("shard 3"), Fenced, "a released lease is fenced too");
});
