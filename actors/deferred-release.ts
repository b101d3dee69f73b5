// Deferred-release actor: holds chunks deferred by quiet hours and re-emits them to their shard when the quiet hours end.
import type { JsMsg } from "@nats-io/jetstream";
import { encode } from "../lib/codec.js";
import type { Config } from "../lib/config.js";
import { decodeAs } from "../lib/lanes.js";
import type { Logger } from "../lib/log.js";
import type { Nats } from "../lib/nats.js";
import { CONSUMER, MSGID, STREAM, fanSubject } from "../lib/subjects.js";
import type { DeferredChunk, FanChunk } from "../lib/types.js";

/** Longest single wait before a held message is looked at again (JetStream keeps the timer; a restart loses nothing). */
const MAX_WAIT_MS = 3_600_000;

export interface DeferredReleaseDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  now?: () => number;
}

/**
 * Consumes NFX_DEFER. A chunk not yet due is nak'd with a delay until its
 * release time (at most an hour at a time); a due one is re-emitted to
 * `nfx.fan.<prio>.<shard>` marked `release` (message id `rel:...`, so a crash
 * before the ack re-emits the same id and JetStream drops the copy), then
 * acked. The shard actor decides its users again: everything but quiet hours
 * is re-checked at release.
 */
export async function startDeferredRelease(d: DeferredReleaseDeps): Promise<{ stop(): Promise<void> }> {
  const log = d.log.child({ actor: "deferred-release" });
  const now = d.now ?? Date.now;
  const c = await d.nats.js.consumers.get(STREAM.defer, CONSUMER.deferred);
  const it = await c.consume({ max_messages: 1000 });
  const handle = async (m: JsMsg): Promise<void> => {
    let held: DeferredChunk;
    try {
      held = decodeAs<DeferredChunk>(m.data, "deferred_chunk");
    } catch (err) {
      log.error({ err, seq: m.seq }, "poison message terminated");
      m.term((err as Error).message);
      return;
    }
    const wait = held.until - now();
    if (wait > 0) {
      m.nak(Math.min(wait, MAX_WAIT_MS));
      return;
    }
    const c0 = held.chunk;
    const chunk: FanChunk = { ...c0, release: held.until };
    try {
      await d.nats.js.publish(fanSubject(c0.notification.priority, c0.shard), encode(chunk), { msgID: MSGID.released(c0.notification.id, c0.shard, c0.chunk, held.until) });
      m.ack();
    } catch (err) {
      log.warn({ err, nid: c0.notification.id }, "release failed; will retry");
      m.nak(1000);
    }
  };
  const done = (async () => {
    for await (const m of it) void handle(m);
  })();
  log.info("deferred-release ready");
  return {
    async stop() {
      await it.close();
      await done;
    },
  };
}
