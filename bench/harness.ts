// What the benchmarks share: a throw-away local cluster with clients, and a count of recipients decided as receipts are published.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { openClients } from "../cmd/cli-context.js";
import { type LocalCluster, mergeDeep, startLocalCluster } from "../cmd/local-cluster.js";
import type { ProcessSpec } from "../cmd/roles.js";
import { decode } from "../lib/core/codec.js";
import { receiptAll } from "../lib/core/subjects.js";
import type { ReceiptBatch } from "../lib/core/types.js";
import { writeUsers } from "../lib/directory/directory.js";
import { syntheticUser } from "../lib/directory/users.js";
import type { Nats } from "../lib/infra/nats.js";
import type { Redis } from "../lib/infra/redis.js";

export interface BenchCluster {
  cluster: LocalCluster;
  nats: Nats;
  redis: Redis;
  /** Closes the clients, stops the cluster and removes its data. */
  close(): Promise<void>;
}

/** Starts a local cluster of `roles` in a temporary directory (with the sandboxes when `sandbox`), logging at warn, with `overrides` on the config, and opens clients. */
export async function startBenchCluster(name: string, roles: readonly ProcessSpec[], sandbox: boolean, overrides: Record<string, unknown> = {}): Promise<BenchCluster> {
  const dir = mkdtempSync(join(tmpdir(), `nfx-bench-${name}-`));
  const cluster = await startLocalCluster({
    dataDir: dir, natsPort: 0, redisPort: 0, httpPort: 0, persist: false,
    sandbox: sandbox ? { apns: 0, fcm: 0, control: 0 } : null, roles, overrides: mergeDeep({ log: { level: "warn" } }, overrides),
  });
  const clients = await openClients(cluster.cfg, "bench");
  return {
    cluster, nats: clients.nats, redis: clients.redis,
    async close() {
      await clients.close().catch(() => undefined);
      await cluster.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Writes `n` synthetic users (lib/directory/users.ts, active as of `now`) to the directory, 2,000 per call, eight calls in flight. */
export async function seedSyntheticUsers(redis: Redis, shards: number, n: number, now = Date.now()): Promise<void> {
  const seeding: Promise<void>[] = [];
  for (let i = 0; i < n; i += 2000) {
    seeding.push(writeUsers(redis, shards, Array.from({ length: Math.min(2000, n - i) }, (_, k) => syntheticUser(i + k, now))));
    if (seeding.length >= 8) await seeding.shift();
  }
  await Promise.all(seeding);
}

/**
 * Counts recipients decided by shard actors from the receipts as they are
 * published (core NATS sees every JetStream publish; a replayed batch is
 * counted once by its message id). Shard actors do not ack chunks, so this is
 * how a benchmark sees that the fan-out is done.
 */
export function countDecided(n: Nats): { readonly decided: number; stop(): void } {
  let decided = 0;
  const seen = new Set<string>();
  const sub = n.nc.subscribe(receiptAll, {
    callback: (_e, m) => {
      const mid = m.headers?.get("Nats-Msg-Id");
      if (!mid?.startsWith("dec:") || seen.has(mid)) return;
      seen.add(mid);
      decided += decode<ReceiptBatch>(m.data).decided ?? 0;
    },
  });
  return {
    get decided() {
      return decided;
    },
    stop: () => sub.unsubscribe(),
  };
}
