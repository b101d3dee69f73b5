// Checks that every send batch a shard actor published reached a gateway, and publishes again those a replicated stream lost after a leader kill (nats-server); the gateways' delivery keys keep a device from a second send.
import type { JetStreamManager } from "@nats-io/jetstream";

import { deliveryKey } from "../core/ids.js";
import { deliveredKey } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { type Channel, STREAM } from "../core/subjects.js";
import type { SendBatch } from "../core/types.js";
import type { PubAck } from "../flow/js-publisher.js";
import { sendsReconciled, sendsUnchecked } from "../infra/metrics.js";
import type { Redis } from "../infra/redis.js";

/** What publishes: {@link JsPublisher} or anything with its contract. */
export interface Publisher {
  publish(subject: string, data: Uint8Array, msgId: string): Promise<PubAck>;
}

/** Timings and bounds of a {@link SendReconciler} (defaults in parentheses). */
export interface ReconcileOptions {
  /** How often the batches due are checked (1,000 ms). */
  tickMs?: number;
  /** A batch is first checked this long after its ack (5,000 ms); one still in its stream and not taken, every ten times as long after. */
  verifyAfterMs?: number;
  /** A batch is published again at most this often (5). */
  maxRepublish?: number;
  /** Bytes of batches held at most (64 MiB); past it the oldest are let go unchecked (logged, counted). */
  maxBytes?: number;
}

interface Entry {
  stream: string;
  subject: string;
  msgId: string;
  data: Uint8Array;
  seq: number;
  /** When it is checked next (ms). */
  due: number;
  /** The delivery keys of its first and last sends: a gateway that took the batch claimed them before anything else. */
  keys: [string, string];
  /** How often it was published again. */
  tries: number;
}

/** The message id of the `n`th republication of `msgId` (a new id: JetStream's duplicate window would drop the old one). */
export const republishId = (msgId: string, n: number): string => `${msgId.replace(/~r\d+$/, "")}~r${n}`;

/**
 * Checks every send batch one publisher puts on the gateways' work-queue
 * streams of `channels`, end to end. nats-server 2.9.10 (and, rarely, later
 * versions: nats-server issues 5412, 6124, 8036) can lose messages of a
 * replicated stream after its leader is killed: the publisher got its ack, yet
 * no consumer ever delivers it. `verifyAfterMs` after its ack a batch is looked
 * for as its first and last delivery keys in Redis (a gateway claims every key
 * of a batch before any provider call: then it is done with), else in its
 * stream under its sequence and message id (then it is checked again ten times
 * as long after, until a gateway takes it), else it is lost and published
 * again under {@link republishId} (counted in `nfx_sends_reconciled_total`,
 * logged) and checked like a new batch. Publishing again is safe: a key
 * already claimed or recorded is not sent again. Holds the batches not yet
 * taken, up to `maxBytes`. A check that cannot answer (Redis or the stream's
 * leader unreachable) is tried again at the next tick; errors are logged.
 */
export class SendReconciler {
  private entries: Entry[] = [];
  private bytes = 0;
  private readonly streams: string[];
  private readonly t: Required<ReconcileOptions>;
  private readonly timer: NodeJS.Timeout;
  private running = false;
  private overLogged = false;
  private checking = 0;

  constructor(private readonly o: { jsm: JetStreamManager; redis: Redis; pub: Publisher; log: Logger; channels: readonly Channel[] } & ReconcileOptions) {
    this.t = { tickMs: o.tickMs ?? 1000, verifyAfterMs: o.verifyAfterMs ?? 5000, maxRepublish: o.maxRepublish ?? 5, maxBytes: o.maxBytes ?? 64 * 1024 * 1024 };
    this.streams = o.channels.map((c) => STREAM.send(c));
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = true;
      this.verify(Date.now()).catch((err) => o.log.warn({ err }, "send reconciliation failed")).finally(() => (this.running = false));
    }, this.t.tickMs);
    this.timer.unref();
  }

  /** Notes the ack `a` of send batch `batch` published as `data` on `subject` under `msgId` (a duplicate's ack too: it names the stored original). Cheap: two key strings and a push. */
  observe(subject: string, msgId: string, data: Uint8Array, batch: SendBatch, a: PubAck): void {
    const first = batch.sends[0];
    const last = batch.sends[batch.sends.length - 1];
    if (!first || !this.streams.includes(a.stream)) return;
    const key = (s: typeof first): string => deliveredKey(batch.shard, deliveryKey(s.nid, s.user, batch.channel, s.device));
    this.hold({ stream: a.stream, subject, msgId, data, seq: a.seq, due: Date.now() + this.t.verifyAfterMs, keys: [key(first), key(last)], tries: 0 });
  }

  private hold(e: Entry): void {
    this.entries.push(e);
    this.bytes += e.data.length;
    while (this.bytes > this.t.maxBytes && this.entries.length > 1) {
      const old = this.entries.shift()!;
      this.bytes -= old.data.length;
      sendsUnchecked.inc({ stream: old.stream });
      if (!this.overLogged) {
        this.overLogged = true;
        this.o.log.warn({ maxBytes: this.t.maxBytes }, "send reconciler over its memory bound: the oldest batches go unchecked (gateways far behind?)");
      }
    }
  }

  /** Batches held (not yet found taken by a gateway), those being checked included. */
  get pending(): number {
    return this.entries.length + this.checking;
  }

  /** Stops checking; batches held are let go. */
  stop(): void {
    clearInterval(this.timer);
  }

  /** Checks each batch due; publishes again those neither taken by a gateway nor in their stream. */
  private async verify(now: number): Promise<void> {
    const due: Entry[] = [];
    const rest: Entry[] = [];
    for (const e of this.entries) (e.due <= now ? due : rest).push(e);
    if (!due.length) return;
    this.entries = rest;
    for (const e of due) this.bytes -= e.data.length;
    this.overLogged = false;
    // Batches being checked still count as held (`pending`) until each is let go or held again.
    this.checking = due.length;
    try {
      const taken = await Promise.all(due.map((e) => this.o.redis.mget(...e.keys).then((v) => v.some((x) => x !== null), () => undefined)));
      const open = due.filter((e, i) => (taken[i] === undefined ? (this.settle({ ...e, due: now + this.t.tickMs }), false) : taken[i] ? (this.settle(), false) : true));
      if (!open.length) return;
      const stored = await Promise.all(open.map((e) => this.o.jsm.streams.getMessage(e.stream, { seq: e.seq }).then((m) => m?.header?.get("Nats-Msg-Id") === e.msgId, () => undefined)));
      for (const [i, e] of open.entries()) {
        if (stored[i] === undefined) this.settle({ ...e, due: now + this.t.tickMs });
        else if (stored[i]) this.settle({ ...e, due: now + 10 * this.t.verifyAfterMs });
        else this.settle(await this.republish(e));
      }
    } finally {
      this.checking = 0;
    }
  }

  /** One batch being checked is done with: held again as `again`, or let go. */
  private settle(again?: Entry): void {
    this.checking--;
    if (again) this.hold(again);
  }

  /** Publishes `e` again under its next id; resolves the entry to hold (the new publication, or `e` to try again), or nothing when it gave up. */
  private async republish(e: Entry): Promise<Entry | undefined> {
    if (e.tries >= this.t.maxRepublish) {
      this.o.log.error({ stream: e.stream, msgId: e.msgId, tries: e.tries }, "send batch still missing after publishing it again; giving up");
      return undefined;
    }
    const msgId = republishId(e.msgId, e.tries + 1);
    try {
      const a = await this.o.pub.publish(e.subject, e.data, msgId);
      this.o.log.warn({ stream: e.stream, msgId: e.msgId, seq: e.seq, again: a.seq }, "send batch lost by its stream (nats-server); published again");
      sendsReconciled.inc({ stream: e.stream });
      return { ...e, msgId, seq: a.seq, due: Date.now() + this.t.verifyAfterMs, tries: e.tries + 1 };
    } catch (err) {
      this.o.log.warn({ err, stream: e.stream, msgId: e.msgId }, "publishing a lost send batch again failed; next tick");
      return { ...e, due: Date.now() + this.t.tickMs };
    }
  }
}
