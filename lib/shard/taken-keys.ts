// The Redis key that shows a send batch was finished by a gateway: what the stream reconciler looks for before it looks in the stream.
import { sendBatchDoneKey } from "../core/keys.js";
import { MSGID } from "../core/subjects.js";
import type { TakenMark } from "../flow/stream-reconciler.js";

/**
 * What shows that the send batch published under message id `msgId` (or a copy of it published again) was finished:
 * its done key ({@link sendBatchDoneKey} of its original id), which a gateway or the in-app dispatcher sets once the
 * batch's outcomes are recorded and its receipts published, right before it acks the batch. Not its delivery keys: a
 * gateway claims those before any provider call, so a batch its stream lost after that (its receipts not yet
 * published, or its process dead) would have been taken for done and never delivered again
 * (docs/operations.md, "nats-server version").
 */
export function takenKeys(msgId: string): TakenMark[] {
  return [sendBatchDoneKey(MSGID.original(msgId))];
}
