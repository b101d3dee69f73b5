// The Redis keys that show a send batch was taken by a gateway: what the stream reconciler looks for before it looks in the stream.
import { deliveredField, deliveredKey } from "../core/keys.js";
import type { SendBatch } from "../core/types.js";
import type { TakenMark } from "../flow/stream-reconciler.js";

/**
 * The delivery keys of the first and last sends of `batch` (fields of
 * lib/core/keys.ts {@link deliveredKey}): a gateway that takes a batch claims
 * every one of its keys before any provider call, and a send dead-lettered
 * releases only its own, so one of the two set means a gateway took the batch.
 * Empty for a batch without sends.
 */
export function takenKeys(batch: SendBatch): TakenMark[] {
  const first = batch.sends[0];
  const last = batch.sends[batch.sends.length - 1];
  if (!first || !last) return [];
  const mark = (s: typeof first): TakenMark => ({ hash: deliveredKey(batch.shard, s.nid, batch.channel), field: deliveredField(s.user, s.device) });
  return [mark(first), mark(last)];
}
