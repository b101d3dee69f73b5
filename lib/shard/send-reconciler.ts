// Finds send batches a replicated send stream lost after a leader change (nats-server set its sequence back) and publishes them again; the gateways' delivery keys keep a device from a second send.
import type { JetStreamManager } from "@nats-io/jetstream";

import { deliveryKey } from "../core/ids.js";
import { deliveredKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { type Channel, STREAM } from "../core/subjects.js";
import type { SendBatch } from "../core/types.js";
import type { PubAck } from "../flow/js-publisher.js";
import { sendsReconciled } from "../infra/metrics.js";
import type { Redis } from "../infra/redis.js";

/** What publishes: {@link JsPublisher} or anything with its contract. */
export interface Publisher {
  publish(subject: string, data: Uint8Array, msgId: string): Promise<PubAck>;
}

/** Timings of a {@link SendReconciler} (defaults in parentheses). */
export interface ReconcileTimings {
  /** How often each send stream's last sequence and leader are read (1,000 ms). */
  pollMs?: number;
  /** How long a batch is kept after its ack in case a sequence fault is seen after it (5,000 ms). */
  holdMs?: number;
  /** A suspect batch is first looked for this long after its ack, and again ten times as long after (3,000 ms). */
  verifyAfterMs?: number;
  /** After a fault is seen, every batch published to that stream this long is a suspect (30,000 ms). */
  suspectMs?: number;
  /** A batch is published again at most this often (5). */
  maxRepublish?: number;
}

interface Entry {
  stream: string;
  subject: string;
  msgId: string;
  data: Uint8Array;
  seq: number;
  /** When it was acked (ms). */
  at: number;
  /** The delivery key of its first send: a gateway that took the batch claimed it before anything else. */
  key: string;
  /** How often it was published again. */
  tries: number;
  /** Checks done: 0, 1 (it was in the stream at the first). */
  checks: number;
}

/** The message id of the `n`th republication of `msgId` (a new id: JetStream's duplicate window would drop the old one). */
export const republishId = (msgId: string, n: number): string => `${msgId}~r${n}`;

/**
 * Watches the send batches one publisher puts on the gateways' work-queue
 * streams of `channels`. nats-server 2.9.10 (and, rarely, later versions:
 * nats-server issues 5412, 6124, 8036) can set a replicated stream's last
 * sequence back when its leader is killed; a batch stored under a sequence its
 * consumers had already passed is acked to the publisher and never delivered.
 * A batch is a suspect when its ack's sequence is at or below the highest this
 * reconciler has seen on that stream (its own acks and the stream's last
 * sequence, read every `pollMs`), or when it was acked within `holdMs` before
 * or `suspectMs` after the stream's last sequence went back or its leader
 * changed. `verifyAfterMs` after its ack, and again ten times as long after, a
 * suspect is looked for: in the stream under its sequence and message id (then
 * it is safe), else its first delivery key in Redis (a gateway took it), else
 * it is lost and published again under {@link republishId} (counted in
 * `nfx_sends_reconciled_total`, logged). Publishing again is safe: a gateway
 * claims every delivery key of a batch before any provider call, and a key
 * already recorded is not sent again. Nothing is held but the last `holdMs` of
 * batches and the suspects. Errors are logged; the next tick tries again.
 */
export class SendReconciler {
  private recent: Entry[] = [];
  private suspects: Entry[] = [];
  private readonly high = new Map<string, number>();
  private readonly leader = new Map<string, string>();
  private readonly suspectUntil = new Map<string, number>();
  private readonly streams: string[];
  private readonly t: Required<ReconcileTimings>;
  private readonly timer: NodeJS.Timeout;
  private running = false;

  constructor(private readonly o: { jsm: JetStreamManager; redis: Redis; pub: Publisher; log: Logger; channels: readonly Channel[] } & ReconcileTimings) {
    this.t = { pollMs: o.pollMs ?? 1000, holdMs: o.holdMs ?? 5000, verifyAfterMs: o.verifyAfterMs ?? 3000, suspectMs: o.suspectMs ?? 30_000, maxRepublish: o.maxRepublish ?? 5 };
    this.streams = o.channels.map((c) => STREAM.send(c));
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = true;
      this.tick().catch((err) => o.log.warn({ err }, "send reconciliation failed")).finally(() => (this.running = false));
    }, this.t.pollMs);
    this.timer.unref();
  }

  /** Notes the ack `a` of send batch `batch` published as `data` on `subject` under `msgId`. Cheap: one comparison, one array push. */
  observe(subject: string, msgId: string, data: Uint8Array, batch: SendBatch, a: PubAck): void {
    const s = batch.sends[0];
    if (!s || !this.streams.includes(a.stream)) return;
    const key = deliveredKey(batch.shard, deliveryKey(s.nid, s.user, batch.channel, s.device));
    this.add({ stream: a.stream, subject, msgId, data, seq: a.seq, at: Date.now(), key, tries: 0, checks: 0 });
  }

  private add(e: Entry): void {
    const high = this.high.get(e.stream) ?? 0;
    if (e.seq <= high || e.at < (this.suspectUntil.get(e.stream) ?? 0)) this.suspects.push(e);
    else {
      this.high.set(e.stream, e.seq);
      this.recent.push(e);
    }
  }

  /** Batches still suspect (not yet found safe, taken, or published again). */
  get pending(): number {
    return this.suspects.length;
  }

  /** Stops the timer; suspects not yet checked are dropped. */
  stop(): void {
    clearInterval(this.timer);
  }

  private async tick(): Promise<void> {
    const now = Date.now();
    this.recent = this.recent.filter((e) => e.at > now - this.t.holdMs);
    for (const stream of this.streams) await this.poll(stream, now);
    await this.verify(now);
  }

  /** Reads `stream`'s last sequence and leader; a sequence gone back or a new leader makes the held batches and the next `suspectMs` suspects. */
  private async poll(stream: string, now: number): Promise<void> {
    const si = await this.o.jsm.streams.info(stream).catch(() => null);
    if (!si) return;
    const high = this.high.get(stream) ?? 0;
    const leader = si.cluster?.leader ?? "";
    const before = this.leader.get(stream);
    this.leader.set(stream, leader);
    const back = si.state.last_seq < high;
    const moved = before !== undefined && leader !== before;
    if (!back && !moved) {
      this.high.set(stream, Math.max(high, si.state.last_seq));
      return;
    }
    if (back) this.o.log.warn({ stream, last: si.state.last_seq, seen: high, leader }, "send stream's sequence went back (nats-server); checking the batches published around it");
    this.suspectUntil.set(stream, now + this.t.suspectMs);
    const [mine, rest] = partition(this.recent, (e) => e.stream === stream);
    this.recent = rest;
    this.suspects.push(...mine);
  }

  /** Looks for each suspect due; publishes again those neither in their stream nor taken by a gateway. */
  private async verify(now: number): Promise<void> {
    const due = (e: Entry): boolean => e.at <= now - this.t.verifyAfterMs * (e.checks === 0 ? 1 : 10);
    const [ready, waiting] = partition(this.suspects, due);
    this.suspects = waiting;
    if (!ready.length) return;
    const stored = await Promise.all(ready.map((e) => this.o.jsm.streams.getMessage(e.stream, { seq: e.seq }).then((m) => m?.header?.get("Nats-Msg-Id") === e.msgId, () => undefined)));
    const missing = ready.filter((e, i) => {
      if (stored[i] === undefined) return this.suspects.push(e), false; // could not tell: next tick
      if (stored[i]) {
        // In the stream: the first time, look again later (a fault may still take it); the second, it is safe.
        if (e.checks === 0) this.suspects.push({ ...e, checks: 1 });
        return false;
      }
      return true;
    });
    if (!missing.length) return;
    const taken = await Promise.all(missing.map((e) => this.o.redis.get(e.key).then((v) => v !== null, () => undefined)));
    for (const [i, e] of missing.entries()) {
      if (taken[i] === undefined) this.suspects.push(e);
      else if (!taken[i]) await this.republish(e);
    }
  }

  private async republish(e: Entry): Promise<void> {
    if (e.tries >= this.t.maxRepublish) {
      this.o.log.error({ stream: e.stream, msgId: e.msgId, tries: e.tries }, "send batch still missing after publishing it again; giving up (nfx replay can send it)");
      return;
    }
    const msgId = republishId(e.msgId.replace(/~r\d+$/, ""), e.tries + 1);
    try {
      const a = await this.o.pub.publish(e.subject, e.data, msgId);
      this.o.log.warn({ stream: e.stream, msgId: e.msgId, seq: e.seq, again: a.seq }, "send batch lost by its stream (nats-server); published again");
      sendsReconciled.inc({ stream: e.stream });
      // Checked again like any suspect: the stream may still be in its fault.
      this.suspects.push({ ...e, msgId, seq: a.seq, at: Date.now(), tries: e.tries + 1, checks: 0 });
    } catch (err) {
      this.o.log.warn({ err, stream: e.stream, msgId: e.msgId }, "publishing a lost send batch again failed; next tick");
      this.suspects.push(e);
    }
  }
}

function partition<T>(xs: readonly T[], f: (x: T) => boolean): [T[], T[]] {
  const yes: T[] = [];
  const no: T[] = [];
  for (const x of xs) (f(x) ? yes : no).push(x);
  return [yes, no];
}
