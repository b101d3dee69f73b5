// Checks that messages a replicated stream acknowledged are still there (or were taken), and publishes again those it lost after a leader kill (nats-server).
import type { JetStreamManager } from "@nats-io/jetstream";

import type { Logger } from "../core/log.js";
import { MSGID } from "../core/subjects.js";
import { messagesRepublished, messagesUnchecked } from "../infra/metrics.js";
import type { Nats } from "../infra/nats.js";
import type { Redis } from "../infra/redis.js";
import type { PubAck } from "./js-publisher.js";

/** What publishes: {@link JsPublisher}, or anything with its contract. */
export interface Publisher {
  publish(subject: string, data: Uint8Array, msgId: string): Promise<PubAck>;
}

/** `nats.js` as a {@link Publisher} (one message id per publish, so a copy within the duplicate window is dropped). */
export const jsPublisher = (nats: Nats): Publisher => ({ publish: (subject, data, msgId) => nats.js.publish(subject, data, { msgID: msgId }) });

/**
 * Publishes `data` on `subject` under message id `msgId` through `pub` and
 * hands the ack to `rec` when there is one (`keys` as for
 * {@link StreamReconciler.observe}). Resolves with the ack; rejects as the
 * publish does, and then nothing is observed.
 */
export async function publishChecked(pub: Publisher, rec: StreamReconciler | null | undefined, subject: string, msgId: string, data: Uint8Array, keys: readonly TakenMark[] | null = null): Promise<PubAck> {
  const a = await pub.publish(subject, data, msgId);
  rec?.observe(subject, msgId, data, a, keys);
  return a;
}

/** What a consumer sets in Redis once it took a message: a key, or a field of a hash (a send's delivery key). */
export type TakenMark = string | { hash: string; field: string };

/** Resolves whether `m` is set in `redis`. */
const isSet = (redis: Redis, m: TakenMark): Promise<boolean> => (typeof m === "string" ? redis.exists(m) : redis.hexists(m.hash, m.field)).then((n) => n > 0);

/** Whether a reconciler runs for setting `setting` (`auto`: on replicated streams, `replicas` > 1). */
export const reconcileWanted = (setting: "auto" | "on" | "off", replicas: number): boolean => (setting === "auto" ? replicas > 1 : setting === "on");

/** Timings and bounds of a {@link StreamReconciler} (defaults in parentheses). */
export interface ReconcileOptions {
  /** How often the messages due are checked (1,000 ms). */
  tickMs?: number;
  /** A message is first checked this long after its ack (5,000 ms); one found in its stream, again ten times as long after. */
  verifyAfterMs?: number;
  /** A message is published again at most this often (5). */
  maxRepublish?: number;
  /** Bytes of messages held at most (64 MiB); past it the oldest are let go unchecked (logged, counted). */
  maxBytes?: number;
  /** A message without keys is let go once found in its stream this many times (2). */
  keepChecks?: number;
}

interface Entry {
  stream: string;
  subject: string;
  msgId: string;
  data: Uint8Array;
  seq: number;
  /** When it is checked next (ms). */
  due: number;
  /** Redis keys (or hash fields) a consumer sets once it took the message (a work queue's), or none: then it is checked `keepChecks` times in its stream. */
  keys: readonly TakenMark[] | null;
  /** How often it was published again. */
  tries: number;
  /** How often it was found in its stream. */
  found: number;
}

/**
 * Checks, end to end, every message one process publishes on the streams
 * `streams`. nats-server 2.9.10 (and, rarely, later versions: nats-server
 * issues 5412, 6124, 8036) can lose messages of a replicated stream after its
 * leader is killed: the publisher got its ack, yet the stream no longer holds
 * it and no consumer ever delivers it. `verifyAfterMs` after its ack a message
 * is looked for as one of its `keys` in Redis when it has keys (a consumer
 * that took it set them: then it is done with), else in its stream under its
 * sequence and message id (not there, its keys are looked for once more: a
 * consumer may have taken it meanwhile); found there, it is checked again ten times as long
 * after (a message with keys until they are set, one without until found
 * `keepChecks` times); not found, it is lost and published again under
 * {@link MSGID.republished} (counted in `nfx_messages_republished_total`,
 * logged) and checked like a new message. Publishing again must be safe for
 * its readers: a send batch's delivery keys keep a device from a second send,
 * and the tracker folds a receipt batch once per original id
 * (docs/operations.md, "nats-server version"). Holds the messages not yet
 * done with, up to `maxBytes`. A check that cannot answer (Redis or the
 * stream's leader unreachable) is tried again at the next tick; errors are
 * logged.
 */
export class StreamReconciler {
  private entries: Entry[] = [];
  private bytes = 0;
  private readonly t: Required<ReconcileOptions>;
  private readonly timer: NodeJS.Timeout;
  private running = false;
  private overLogged = false;
  private checking = 0;

  constructor(private readonly o: { jsm: JetStreamManager; redis: Redis; pub: Publisher; log: Logger; streams: readonly string[] } & ReconcileOptions) {
    this.t = { tickMs: o.tickMs ?? 1000, verifyAfterMs: o.verifyAfterMs ?? 5000, maxRepublish: o.maxRepublish ?? 5, maxBytes: o.maxBytes ?? 64 * 1024 * 1024, keepChecks: o.keepChecks ?? 2 };
    this.timer = setInterval(() => {
      if (this.running) return;
      this.running = true;
      this.verify(Date.now()).catch((err) => o.log.warn({ err }, "stream reconciliation failed")).finally(() => (this.running = false));
    }, this.t.tickMs);
    this.timer.unref();
  }

  /**
   * Notes the ack `a` of a message published as `data` on `subject` under `msgId` (a duplicate's ack too: it names the
   * stored original); `keys` are set in Redis by whoever takes it, if anything does. Ignored for streams not checked.
   * Cheap: a push.
   */
  observe(subject: string, msgId: string, data: Uint8Array, a: PubAck, keys: readonly TakenMark[] | null = null): void {
    if (!this.o.streams.includes(a.stream)) return;
    this.hold({ stream: a.stream, subject, msgId, data, seq: a.seq, due: Date.now() + this.t.verifyAfterMs, keys, tries: 0, found: 0 });
  }

  private hold(e: Entry): void {
    this.entries.push(e);
    this.bytes += e.data.length;
    while (this.bytes > this.t.maxBytes && this.entries.length > 1) {
      const old = this.entries.shift()!;
      this.bytes -= old.data.length;
      messagesUnchecked.inc({ stream: old.stream });
      if (!this.overLogged) {
        this.overLogged = true;
        this.o.log.warn({ maxBytes: this.t.maxBytes }, "stream reconciler over its memory bound: the oldest messages go unchecked (consumers far behind?)");
      }
    }
  }

  /** Messages held (not yet done with), those being checked included. */
  get pending(): number {
    return this.entries.length + this.checking;
  }

  /** Stops checking; messages held are let go. */
  stop(): void {
    clearInterval(this.timer);
  }

  /** Checks each message due; publishes again those neither taken nor in their stream. */
  private async verify(now: number): Promise<void> {
    const due: Entry[] = [];
    const rest: Entry[] = [];
    for (const e of this.entries) (e.due <= now ? due : rest).push(e);
    if (!due.length) return;
    this.entries = rest;
    for (const e of due) this.bytes -= e.data.length;
    this.overLogged = false;
    // Messages being checked still count as held (`pending`) until each is let go or held again.
    this.checking = due.length;
    const retry = (e: Entry): Entry => Object.assign({}, e, { due: now + this.t.tickMs });
    /** Whether a consumer took `e` (one of its keys set): undefined when Redis could not answer; false without keys. */
    const taken = (e: Entry): Promise<boolean | undefined> => (e.keys?.length ? Promise.all(e.keys.map((m) => isSet(this.o.redis, m))).then((v) => v.some(Boolean), () => undefined) : Promise.resolve(false));
    try {
      const before = await Promise.all(due.map(taken));
      const open = due.filter((e, i) => (before[i] === undefined ? (this.settle(retry(e)), false) : before[i] ? (this.settle(), false) : true));
      if (!open.length) return;
      const stored = await Promise.all(open.map((e) => this.o.jsm.streams.getMessage(e.stream, { seq: e.seq }).then((m) => m?.header?.get("Nats-Msg-Id") === e.msgId, () => undefined)));
      // Not in its stream: a consumer may have taken it (claimed its keys, then acked it away) while the stream was
      // being asked. Its keys are looked for once more, now, before it is taken for lost.
      const since = await Promise.all(open.map((e, i) => (stored[i] === false ? taken(e) : Promise.resolve(false))));
      for (const [i, e] of open.entries()) {
        if (stored[i] === undefined || since[i] === undefined) this.settle(retry(e));
        else if (since[i]) this.settle();
        else if (!stored[i]) this.settle(await this.republish(e));
        else if (!e.keys && e.found + 1 >= this.t.keepChecks) this.settle();
        else this.settle(Object.assign({}, e, { found: e.found + 1, due: now + 10 * this.t.verifyAfterMs }));
      }
    } finally {
      this.checking = 0;
    }
  }

  /** One message being checked is done with: held again as `again`, or let go. */
  private settle(again?: Entry): void {
    this.checking--;
    if (again) this.hold(again);
  }

  /** Publishes `e` again under its next id; resolves the entry to hold (the new publication, or `e` to try again), or nothing when it gave up. */
  private async republish(e: Entry): Promise<Entry | undefined> {
    if (e.tries >= this.t.maxRepublish) {
      this.o.log.error({ stream: e.stream, msgId: e.msgId, tries: e.tries }, "message still missing after publishing it again; giving up");
      return undefined;
    }
    const msgId = MSGID.republished(e.msgId, e.tries + 1);
    try {
      const a = await this.o.pub.publish(e.subject, e.data, msgId);
      this.o.log.warn({ stream: e.stream, msgId: e.msgId, seq: e.seq, again: a.seq }, "message lost by its stream (nats-server); published again");
      messagesRepublished.inc({ stream: e.stream });
      return Object.assign({}, e, { msgId, seq: a.seq, due: Date.now() + this.t.verifyAfterMs, tries: e.tries + 1, found: 0 });
    } catch (err) {
      this.o.log.warn({ err, stream: e.stream, msgId: e.msgId }, "publishing a lost message again failed; next tick");
      return Object.assign({}, e, { due: Date.now() + this.t.tickMs });
    }
  }
}
