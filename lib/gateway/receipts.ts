// Receipt entries of one handled send batch, collected per notification and published as one receipt batch each under the batch's message ids.
import { encode } from "../core/codec.js";
import { MSGID, receiptSubject } from "../core/subjects.js";
import type { ReceiptBatch, ReceiptEntry } from "../core/types.js";
import type { Nats } from "../infra/nats.js";

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
   * nothing was collected.
   */
  publish(nats: Nats, batchId: string): Promise<unknown> {
    return Promise.all(
      [...this.byNid].map(([nid, list]) => {
        const rb: ReceiptBatch = { type: "receipts", nid, stage: "gateway", entries: list };
        return nats.js.publish(receiptSubject(nid), encode(rb), { msgID: MSGID.delivered(batchId, nid) });
      }),
    );
  }
}
