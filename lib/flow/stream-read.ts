// Reading a stream's stored messages once, for status and operator tools (not the hot path).
import { AckPolicy, DeliverPolicy } from "@nats-io/jetstream";
import { nanos } from "@nats-io/transport-node";

import type { Nats } from "../infra/nats.js";

/**
 * Visits every message stored in `stream` (optionally only `subject`), in
 * stream order, through a short-lived ephemeral consumer that acks nothing
 * (a limits-retention stream only). Resolves when the messages present at the
 * start have been visited, or as soon as `visit` returns false. The consumer
 * is not deleted (roles' NATS users may not delete consumers, which would let
 * them delete others' durables: docs/security.md); the server removes it
 * 10 s after its last fetch.
 */
export async function readStored(n: Nats, stream: string, visit: (m: { seq: number; subject: string; data: Uint8Array }) => void | boolean, subject?: string): Promise<void> {
  const ci = await n.jsm.consumers.add(stream, {
    ...(subject ? { filter_subject: subject } : {}),
    ack_policy: AckPolicy.None,
    deliver_policy: DeliverPolicy.All,
    inactive_threshold: nanos(10_000),
    mem_storage: true,
  });
  let pending = ci.num_pending;
  const c = await n.js.consumers.get(stream, ci.name);
  while (pending > 0) {
    const batch = await c.fetch({ max_messages: Math.min(pending, 512), expires: 2000 });
    let got = 0;
    let stop = false;
    for await (const m of batch) {
      if (stop) continue;
      if (visit({ seq: m.seq, subject: m.subject, data: m.data }) === false) stop = true;
      pending = m.info.pending;
      got++;
    }
    if (stop) break;
    if (got === 0) break;
  }
}
