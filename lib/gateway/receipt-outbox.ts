// The webhook gateways' receipt outbox: endpoint delivery outcomes recorded in Redis one by one, each once, and published on NFX_RECEIPTS many at a time.
import { randomUUID } from "node:crypto";

import { WEBHOOK_RECEIPT_OUTBOX as K } from "../core/keys.js";
import type { Logger } from "../core/log.js";
import { MSGID } from "../core/subjects.js";
import type { ReceiptEntry } from "../core/types.js";
import type { Publisher, StreamReconciler } from "../flow/stream-reconciler.js";
import type { Redis } from "../infra/redis.js";
import { type ScriptRedis, withScripts } from "../infra/scripts.js";
import { publishReceipts } from "./receipts.js";

/** One outcome to report: its receipt id (`MSGID.webhookOutcome`: one per delivery and outcome), notification and entry. */
export interface OutboxItem {
  id: string;
  nid: string;
  entry: ReceiptEntry;
}

/** Timings and sizes of a {@link ReceiptOutbox} (defaults in parentheses). */
export interface ReceiptOutboxOptions {
  /** Entries per batch taken (512). */
  maxBatch?: number;
  /** A batch taken and not finished for this long is taken again, by any process (10,000 ms). */
  staleMs?: number;
  /** How long a receipt id taken into a batch is remembered, so the same outcome recorded again is not published twice (15 minutes). */
  keepMs?: number;
  /** How often the outbox is looked at when nothing was added here (1,000 ms): other processes' stale batches. */
  idleMs?: number;
}

/**
 * The receipt outbox of one gateway-webhook process. {@link add} records outcomes in Redis (every add of one event-loop
 * turn in one script call) and resolves once they are stored: a delivery is finished in its queue only after that,
 * so a crash in between redoes the delivery and records the same receipt id again, which the outbox drops. A
 * publisher loop takes batches of up to `maxBatch` entries (each batch stored in Redis under a random id until
 * published, so a batch whose publisher crashed is published again by any process after `staleMs`, under the same
 * message ids) and publishes each notification's entries as one receipt batch (`MSGID.webhookReceipts`). A receipt
 * id is remembered `keepMs` after it was taken: the same outcome recorded again later than that would count twice.
 */
export class ReceiptOutbox {
  private readonly r: ScriptRedis;
  private readonly maxBatch: number;
  private readonly staleMs: number;
  private readonly keepMs: number;
  private readonly idleMs: number;
  private queued: OutboxItem[] = [];
  private flushing: Promise<void> | null = null;
  private kick: (() => void) | null = null;
  private dirty = false;
  private stopping = false;
  private readonly loop: Promise<void>;

  constructor(redis: Redis, private readonly pub: Publisher, private readonly rec: StreamReconciler | null, private readonly log: Logger, o: ReceiptOutboxOptions = {}) {
    this.r = withScripts(redis);
    this.maxBatch = o.maxBatch ?? 512;
    this.staleMs = o.staleMs ?? 10_000;
    this.keepMs = o.keepMs ?? 15 * 60_000;
    this.idleMs = o.idleMs ?? 1000;
    this.loop = this.run();
  }

  /** Records `items` in the outbox (with every other add of this turn, in one call). Resolves once stored; rejects when Redis failed. */
  add(items: readonly OutboxItem[]): Promise<void> {
    if (items.length === 0) return Promise.resolve();
    const first = this.queued.length === 0;
    for (const i of items) this.queued.push(i);
    if (first) this.flushing = new Promise<void>((res) => setImmediate(res)).then(() => this.store());
    return this.flushing!;
  }

  private async store(): Promise<void> {
    const list = this.queued;
    this.queued = [];
    const args: string[] = [];
    for (const i of list) args.push(i.id, JSON.stringify({ nid: i.nid, e: i.entry }));
    await this.r.nfxReceiptOutboxAdd(K.entries, K.order, K.taken, ...args);
    this.dirty = true;
    this.wake();
  }

  private wake(): void {
    const k = this.kick;
    this.kick = null;
    k?.();
  }

  /** Takes and publishes batches until the outbox is empty; one that fails to publish stays taken (published again after `staleMs`). */
  private async drain(): Promise<void> {
    for (;;) {
      const got = await this.r.nfxReceiptOutboxTake(K.entries, K.order, K.taken, K.batches, K.batchTimes, Date.now(), this.maxBatch, randomUUID(), this.staleMs, this.keepMs);
      if (got.length < 2) return;
      const [batch, body] = got;
      const byNid = new Map<string, ReceiptEntry[]>();
      for (const { nid, e } of JSON.parse(body) as { nid: string; e: ReceiptEntry }[]) {
        const l = byNid.get(nid);
        if (l) l.push(e);
        else byNid.set(nid, [e]);
      }
      await Promise.all([...byNid].map(([nid, entries]) => publishReceipts(this.pub, this.rec, nid, MSGID.webhookReceipts(batch, nid), entries)));
      // The body first: a time left without its body is dropped by the next take; a body left without its time would stay.
      await this.r.hdel(K.batches, batch);
      await this.r.zrem(K.batchTimes, batch);
    }
  }

  private async run(): Promise<void> {
    while (!this.stopping) {
      this.dirty = false;
      await this.drain().catch((err) => this.log.warn({ err }, "publishing webhook receipts failed; their batch is published again shortly"));
      if (this.dirty || this.stopping) continue;
      await new Promise<void>((res) => {
        const t = setTimeout(res, this.idleMs);
        this.kick = () => (clearTimeout(t), res());
      });
    }
  }

  /** Stops the publisher loop after one more pass (what was recorded here is published, or left for another process). */
  async stop(): Promise<void> {
    await this.flushing?.catch(() => undefined);
    this.stopping = true;
    this.wake();
    await this.loop;
    await this.drain().catch((err) => this.log.warn({ err }, "webhook receipts left in the outbox at stop; another gateway-webhook process publishes them"));
  }
}
