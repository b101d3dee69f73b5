// Test helpers for shard ownership: who holds which shard lease, and the send batches shard actors publish.
import type { ChildProcess } from "node:child_process";

import { decode, decodeJson } from "../../lib/core/codec.js";
import { BUCKET, LEASE_KEY, type OwnershipGroup } from "../../lib/core/subjects.js";
import type { SendBatch } from "../../lib/core/types.js";
import { kvKeys, type Nats } from "../../lib/infra/nats.js";

/** Current holders of unexpired partition leases of `cls` (a lane class's user shards, bulk by default, or the webhook gateways' endpoint partitions): partition -> {owner, epoch}. */
export async function shardHolders(n: Nats, cls: OwnershipGroup = "bulk"): Promise<Map<number, { owner: string; epoch: number }>> {
  const kv = await n.kvm.open(BUCKET.leases);
  const out = new Map<number, { owner: string; epoch: number }>();
  // kvKeys, not kv.keys(), which reads a consumer until its pending count is 0 (lib/infra/nats.ts): with leases renewed
  // several times a second, webhook-partitions.test sat 108 s before its first check (which waits on this listing), twice in 35 runs.
  for (const k of await kvKeys(n.jsm, BUCKET.leases, LEASE_KEY.shards(cls))) {
    const e = await kv.get(k);
    if (!e || e.operation !== "PUT") continue;
    const r = decodeJson<{ owner: string; expiresAt: number }>(e.value);
    if (r.expiresAt > Date.now()) out.set(Number(k.split(".").pop()), { owner: r.owner, epoch: e.revision });
  }
  return out;
}

/** Whether an owner id belongs to process `p` (owner ids are host-pid-random). */
export const ownedBy = (owner: string, p: ChildProcess): boolean => owner.includes(`-${p.pid}-`);

/** Watches every send batch published (core NATS sees JetStream publishes too): owner, epoch and time of each. */
export function watchSendBatches(n: Nats): { seen: { owner: string; epoch: number; at: number; subject: string; sends: string[] }[]; stop: () => void } {
  const seen: { owner: string; epoch: number; at: number; subject: string; sends: string[] }[] = [];
  const sub = n.nc.subscribe("nfx.send.>", {
    callback: (_e, m) => {
      try {
        const b = decode<SendBatch>(m.data);
        seen.push({ owner: b.owner ?? "", epoch: b.epoch ?? 0, at: Date.now(), subject: m.subject, sends: b.sends.map((x) => `${x.nid}:${x.user}:${x.device}`) });
      } catch {
        /* not a batch */
      }
    },
  });
  return { seen, stop: () => sub.unsubscribe() };
}
