// Receipt entries of one handled send batch, collected per notification and published as one receipt batch each under the batch's message ids.
import { encode } from "../core/codec.js";
import type { Config } from "../core/config.js";
import { receiptFoldedKey, sendBatchDoneKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { MSGID, receiptSubject, STREAM } from "../core/subjects.js";
import type { ReceiptBatch, ReceiptEntry } from "../core/types.js";
import { jsPublisher, publishChecked, type Publisher, reconcileWanted, StreamReconciler } from "../flow/stream-reconciler.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";

/**
 * The stream reconciler of one gateway process's lane class
 * (lib/flow/stream-reconciler.ts): checks the receipt batches it publishes on
 * NFX_RECEIPTS, and the send batches of `sendStreams` it publishes (the in-app
 * dispatcher's push fallbacks), and publishes again what a replicated stream
 * lost. Null when `gateways.reconcileReceipts` is off (auto: off on one
 * nats-server). Republishes through `nats.js`; stop it with the process.
 */
export function receiptReconciler(d: { cfg: Config; nats: Nats; redis: Redis; log: Logger }, sendStreams: readonly string[] = []): StreamReconciler | null {
  const g = d.cfg.gateways;
  if (!reconcileWanted(g.reconcileReceipts, d.cfg.streams.replicas)) return null;
  return new StreamReconciler({ jsm: d.nats.jsm, redis: d.redis, pub: jsPublisher(d.nats), log: d.log, streams: [STREAM.receipts, ...sendStreams], maxBytes: g.reconcileMaxMb * 1024 * 1024 });
}

/**
 * Whether the stages that take send batches mark each one done ({@link markSendBatchDone}): when a reconciler checks
 * send batches (the shard actor's, `shard.reconcileSends`, or the in-app dispatcher's fallbacks, `gateways.reconcileReceipts`).
 */
export const sendBatchesChecked = (cfg: Config): boolean =>
  reconcileWanted(cfg.shard.reconcileSends, cfg.streams.replicas) || reconcileWanted(cfg.gateways.reconcileReceipts, cfg.streams.replicas);

/**
 * Marks the send batch first published as message `firstId` (`firstIdOf` in lib/flow/lanes.ts) done, for an hour: its
 * outcomes are recorded and its receipts published, and it is about to be acked. Until then its publisher's stream
 * reconciler keeps checking it, and publishes it again if its stream loses it (lib/shard/taken-keys.ts). Rejects as
 * Redis does (the batch then fails and is redelivered).
 */
export async function markSendBatchDone(redis: Redis, firstId: string): Promise<void> {
  await redis.set(sendBatchDoneKey(firstId), "1", "EX", 3600);
}

/** Whether the send batch first published as message `firstId` was marked done ({@link markSendBatchDone}) within the hour. */
export async function sendBatchDone(redis: Redis, firstId: string): Promise<boolean> {
  return (await redis.exists(sendBatchDoneKey(firstId))) === 1;
}

/**
 * Publishes the receipt batch of notification `nid` from stage `gateway`
 * (`entries`, in order) on `receiptSubject(nid)` under `msgId`, through `pub`,
 * and hands its ack to `rec` when there is one (done with once the tracker
 * folded it: `receiptFoldedKey`). Resolves when JetStream
 * acknowledged it; rejects if the publish failed.
 */
export function publishReceipts(pub: Publisher, rec: StreamReconciler | null | undefined, nid: string, msgId: string, entries: ReceiptEntry[]): Promise<unknown> {
  const rb: ReceiptBatch = { type: "receipts", nid, stage: "gateway", entries };
  return publishChecked(pub, rec, receiptSubject(nid), msgId, encode(rb), rec ? [receiptFoldedKey(msgId)] : null);
}

/**
 * Collects the receipt entries of one send batch, per notification in the
 * order they were added, and publishes them once the batch's outcomes are
 * durable. Used by every provider gateway's runner and by the in-app
 * dispatcher; one collector per handled batch, owned by its handler.
 */
export class ReceiptCollector {
  private readonly byNid = new Map<string, ReceiptEntry[]>();

  /** Adds `e` to the receipts of notification `nid`. */
  add(nid: string, e: ReceiptEntry): void {
    const l = this.byNid.get(nid);
    if (l) l.push(e);
    else this.byNid.set(nid, [e]);
  }

  /** The entries collected so far, per notification (notifications in first-added order). */
  entries(): ReadonlyMap<string, readonly ReceiptEntry[]> {
    return this.byNid;
  }

  /**
   * Publishes one receipt batch per notification (stage `gateway`) on
   * `receiptSubject(nid)` with message id `MSGID.delivered(batchId, nid)`, so
   * a redelivered batch's receipts are dropped as duplicates. Resolves when
   * JetStream acknowledged all of them; rejects if any publish failed (the
   * caller's batch then fails and is redelivered). Publishes nothing when
   * nothing was collected. Each ack is handed to `rec`, when given
   * ({@link receiptReconciler}). `pub`: the publisher to use (default: one
   * request per publish on `nats`).
   */
  publish(nats: Nats, batchId: string, rec?: StreamReconciler | null, pub: Publisher = jsPublisher(nats)): Promise<unknown> {
    return Promise.all([...this.byNid].map(([nid, list]) => publishReceipts(pub, rec, nid, MSGID.delivered(batchId, nid), list)));
  }
}
