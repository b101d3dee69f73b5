// "Hold until due": consume a stream of messages that each carry a due time, nak each until it is due, then release it and ack.
import type { JsMsg } from "@nats-io/jetstream";

import type { Config } from "../core/config.js";
import type { Logger } from "../core/log.js";
import type { Nats } from "../infra/nats.js";
import { decodeAs, PoisonMessage } from "./lanes.js";
import { PULL_EXPIRES_MS } from "./pull.js";

/** Longest single wait before a held message is looked at again (JetStream keeps the timer; a restart loses nothing). */
const MAX_WAIT_MS = 3_600_000;

/** What an actor built on this loop needs (the scheduler and the deferred-release actor). */
export interface HoldActorDeps {
  cfg: Config;
  nats: Nats;
  log: Logger;
  now?: () => number;
}

export interface HoldOptions<T extends { type: string }> {
  nats: Nats;
  log: Logger;
  stream: string;
  consumer: string;
  type: T["type"];
  now: () => number;
  /** Milliseconds of `now` per real millisecond (a scaled test clock: lib/core/clock.ts); default 1. */
  scale?: number;
  /** When the message is due (epoch ms). */
  dueAt(v: T): number;
  /** Real ms to wait, when due, before releasing `v` (pacing: 0 releases now, and counts it as released). */
  pace?(v: T): number;
  /** Publishes the released message; must be idempotent (a deterministic message id), it may run twice after a crash. */
  release(v: T, raw: Uint8Array): Promise<unknown>;
}

/**
 * Runs the loop: a message not yet due is nak'd with a delay until it is (at
 * most an hour at a time); a due one is released and then acked, or nak'd for
 * a retry in a second if the release fails. Undecodable messages are
 * terminated. Used by the scheduler (send-at) and the deferred-release actor
 * (quiet hours).
 */
export async function holdUntilDue<T extends { type: string }>(o: HoldOptions<T>): Promise<{ stop(): Promise<void> }> {
  const c = await o.nats.js.consumers.get(o.stream, o.consumer);
  const it = await c.consume({ max_messages: 1000, expires: PULL_EXPIRES_MS });
  const handle = async (m: JsMsg): Promise<void> => {
    let v: T;
    try {
      v = decodeAs<T>(m.data, o.type);
    } catch (err) {
      o.log.error({ err, seq: m.seq }, "poison message terminated");
      m.term((err as PoisonMessage).message);
      return;
    }
    const wait = o.dueAt(v) - o.now();
    if (wait > 0) {
      // The wait is in the clock's time; JetStream's redelivery delay in real time.
      m.nak(Math.max(1, Math.min(Math.ceil(wait / (o.scale ?? 1)), MAX_WAIT_MS)));
      return;
    }
    const paced = o.pace?.(v) ?? 0;
    if (paced > 0) {
      m.nak(Math.min(Math.ceil(paced), MAX_WAIT_MS));
      return;
    }
    try {
      await o.release(v, m.data);
      m.ack();
    } catch (err) {
      o.log.warn({ err, seq: m.seq }, "release failed; will retry");
      m.nak(1000);
    }
  };
  const done = (async () => {
    for await (const m of it) void handle(m);
  })();
  return {
    async stop() {
      await it.close();
      await done;
    },
  };
}

/**
 * Paces releases per key (a campaign) at `rate` items per second with a token bucket of one second's burst (an item
 * count larger than the burst goes once the bucket is full). {@link wait}: 0 when `n` items may go now (taken), else the
 * ms until they may. Per process: with several processes releasing one campaign, the rates add up.
 */
export class ReleasePacer {
  private readonly buckets = new Map<string, { credit: number; at: number }>();

  wait(key: string, n: number, rate: number, now: number): number {
    if (rate <= 0) return 0;
    let b = this.buckets.get(key);
    if (!b) this.buckets.set(key, (b = { credit: rate, at: now }));
    b.credit = Math.min(rate, b.credit + ((now - b.at) / 1000) * rate);
    b.at = now;
    const need = Math.min(n, rate);
    if (b.credit >= need) {
      b.credit -= n;
      if (this.buckets.size > 10_000) this.buckets.clear();
      return 0;
    }
    return Math.ceil(((need - b.credit) / rate) * 1000);
  }
}
