// Endpoint partitions of the webhook gateways: each read by one process at a time (a lease; the live processes share them out evenly), taken over only once the previous reader's batches are settled.
import type { JsMsg } from "@nats-io/jetstream";

import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import { BUCKET, CONSUMER, PRIORITIES, type Priority, STREAM } from "../core/subjects.js";
import { type Lanes, type Later, runLanes } from "../flow/lanes.js";
import { ShardOwnership } from "../flow/shard-ownership.js";
import { isConsumerNotFound, type Nats } from "../infra/nats.js";

/** What a webhook gateway's partitions run on. */
export interface EndpointPartitionDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  /** This process's owner id (unique per process run). */
  owner: string;
  /** True once the process is stopping: a take-over then stops waiting for the previous reader. */
  stopping(): boolean;
  /**
   * Handles one send batch of a partition's lane `prio`; work it leaves running ({@link Later}) is also added by the
   * handler to `mine`, the partition's set, which a graceful hand-over waits for.
   */
  handle(m: JsMsg, prio: Priority, mine: Set<Promise<void>>): Promise<void | Later>;
}

/**
 * Shares the `endpoints.partitions` partitions of NFX_SEND_WEBHOOK out among the live webhook gateways by lease in
 * the leases bucket (`endpoints.partitionLeaseMs`, evenly: at most ceil(P/n) each), so every delivery of an endpoint
 * comes to one process, in publish order. A partition taken is read on its four priority lanes
 * (`CONSUMER.webhook(prio, part)`, `gateways.batchConcurrency` batches at once, 4 prefetched), but only once none of
 * its batches is out unacked with another reader (or `gateways.ackWaitSec` has passed and they are due again):
 * JetStream hands a lane's redeliveries out before newer batches. A partition handed over stops its lanes and, when
 * graceful, waits for its batches' work before the lease goes. Call `start()` on the result; `stop()` hands every
 * partition over.
 */
export async function endpointPartitions(d: EndpointPartitionDeps): Promise<ShardOwnership> {
  const c = d.cfg;
  const held = new Map<number, { lanes: Lanes; mine: Set<Promise<void>> }>();
  /**
   * Until no batch of `part`'s lanes is out unacked with another reader, or `gateways.ackWaitSec` (and half a second)
   * passed and they are due again; then how many each lane still has out (the next reader gathers them and takes them
   * oldest first).
   */
  const unackedSettled = async (part: number): Promise<Record<Priority, number>> => {
    const until = Date.now() + c.gateways.ackWaitSec * 1000 + 500;
    const out = Object.fromEntries(PRIORITIES.map((p) => [p, 0])) as Record<Priority, number>;
    for (;;) {
      // A look-up that fails (the server slow to answer) says nothing: asked again, not taken for "none out" (a consumer
      // that is not there has nothing out).
      const pending = await Promise.all(PRIORITIES.map((p) => d.nats.jsm.consumers.info(STREAM.send("webhook"), CONSUMER.webhook(p, part)).then(
        (ci) => ci.num_ack_pending,
        (err: unknown) => (isConsumerNotFound(err) ? 0 : -1),
      )));
      for (const [i, p] of PRIORITIES.entries()) if (pending[i] >= 0) out[p] = pending[i];
      if (pending.every((n) => n === 0) || Date.now() >= until || d.stopping()) return out;
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  return new ShardOwnership({
    kv: await d.nats.kvm.open(BUCKET.leases), jsm: d.nats.jsm, cls: "webhook", shards: c.endpoints.partitions, balanced: true, owner: d.owner, leaseMs: c.endpoints.partitionLeaseMs, log: d.log,
    acquired: async (part, lease) => {
      const catchUp = await unackedSettled(part);
      // Lost while waiting (a renewal the bucket did not answer): not read; taken again on a later tick.
      if (lease.lost) throw new Error(`endpoint partition ${part}: lease lost while taking it over`);
      const mine = new Set<Promise<void>>();
      const lanes = runLanes({
        js: d.nats.js, stream: STREAM.send("webhook"), consumer: (p) => CONSUMER.webhook(p, part), concurrency: c.gateways.batchConcurrency, prefetch: 4,
        ackWaitSec: c.gateways.ackWaitSec, log: d.log, catchUp,
        handle: (m, prio) => d.handle(m, prio, mine),
      });
      held.set(part, { lanes, mine });
      await lanes.ready;
    },
    released: async (part, graceful) => {
      const h = held.get(part);
      held.delete(part);
      if (!h) return;
      await h.lanes.stop();
      if (graceful) await Promise.allSettled([...h.mine]);
    },
  });
}
