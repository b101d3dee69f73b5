// Notes of webhook deliveries answered for good but not yet recorded (a send batch's direct ones, an endpoint queue's head), written every few tens of milliseconds, so whoever takes over after a crash posts only what had no answer yet.
import type { Logger } from "../core/log.js";
import type { HistoryEntry } from "../flow/endpoint-queues.js";
import type { Redis } from "../infra/redis.js";

/** How often noted answers are written: the most a crash can lose of them (they are posted again, same `webhook-id`). */
const ANSWERED_FLUSH_MS = 50;
/** How long notes outlive their last write when the batch is never finished here (a crash): past any redelivery of it. */
const ANSWERED_TTL_SEC = 3600;

/** What is kept of one answered delivery: its outcome, HTTP status, time and (failed) reason; the rest comes from its batch. */
export type AnsweredNote = Pick<HistoryEntry, "outcome" | "status" | "at" | "reason">;

const encodeNote = (e: AnsweredNote): string => `${e.outcome === "delivered" ? "d" : "f"}|${e.status}|${e.at}|${e.reason ?? ""}`;
const decodeNote = (v: string): AnsweredNote | null => {
  const [o, status, at, ...reason] = v.split("|");
  if ((o !== "d" && o !== "f") || !Number.isFinite(Number(status)) || !Number.isFinite(Number(at))) return null;
  const r = reason.join("|");
  return { outcome: o === "d" ? "delivered" : "failed", status: Number(status), at: Number(at), ...(r ? { reason: r } : {}) };
};

/**
 * A gateway process's notes of answered deliveries, each in a hash named by what is being delivered
 * (`webhookAnsweredKey` of a send batch, `endpointAnsweredKey` of an endpoint's queue: lib/core/keys.ts), field the
 * delivery id. A note is written within {@link ANSWERED_FLUSH_MS} of being made, each hash's notes of that interval
 * in one `HSET` (and an expiry of an hour); a failed write is logged, not thrown: the notes only spare a receiver
 * duplicate posts after a crash, which carry the same `webhook-id` anyway. One per gateway process.
 */
export class AnsweredDeliveries {
  private pending = new Map<string, string[]>();
  private drops = new Map<string, string[]>();
  private timer: NodeJS.Timeout | null = null;
  private writing: Promise<void> = Promise.resolve();

  constructor(private readonly redis: Redis, private readonly log: Logger) {}

  /** Notes delivery `deliveryId` in hash `key` as answered for good with `e`. */
  note(key: string, deliveryId: string, e: AnsweredNote): void {
    let l = this.pending.get(key);
    if (!l) this.pending.set(key, (l = []));
    l.push(deliveryId, encodeNote(e));
    this.later();
  }

  /** The notes stored in hash `key` (what an earlier holder had answered), by delivery id. */
  async of(key: string): Promise<Map<string, AnsweredNote>> {
    const out = new Map<string, AnsweredNote>();
    for (const [id, v] of Object.entries(await this.redis.hgetall(key))) {
      const n = decodeNote(v);
      if (n) out.set(id, n);
    }
    return out;
  }

  /** Deletes hash `key` (a send batch done: marked, and acked next), notes not yet written included. Never rejects: a failure is logged (the notes expire in an hour). */
  async forget(key: string): Promise<void> {
    this.pending.delete(key);
    this.drops.delete(key);
    await this.writing;
    await this.redis.del(key).catch((err: unknown) => this.log.warn({ err, key }, "answered webhook deliveries not deleted; they expire"));
  }

  /** Drops the notes of `deliveryIds` from hash `key` (recorded now: finished in their queue) with the next write. */
  drop(key: string, deliveryIds: readonly string[]): void {
    if (deliveryIds.length === 0) return;
    // Notes not written yet are simply not written.
    const pending = this.pending.get(key);
    let rest = deliveryIds;
    if (pending) {
      const gone = new Set(deliveryIds);
      const kept: string[] = [];
      const unwritten = new Set<string>();
      for (let i = 0; i < pending.length; i += 2) {
        if (gone.has(pending[i])) unwritten.add(pending[i]);
        else kept.push(pending[i], pending[i + 1]);
      }
      if (kept.length) this.pending.set(key, kept);
      else this.pending.delete(key);
      rest = deliveryIds.filter((id) => !unwritten.has(id));
    }
    if (rest.length === 0) return;
    let l = this.drops.get(key);
    if (!l) this.drops.set(key, (l = []));
    l.push(...rest);
    this.later();
  }

  private later(): void {
    this.timer ??= setTimeout(() => void this.flush(), ANSWERED_FLUSH_MS);
  }

  /** Writes what is pending now; resolves when written (or its failure logged). */
  flush(): Promise<void> {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const notes = this.pending;
    const drops = this.drops;
    if (notes.size === 0 && drops.size === 0) return this.writing;
    this.pending = new Map();
    this.drops = new Map();
    // Commands of their own (each hash in its own slot on a Redis Cluster), sent together by the client's auto-pipelining;
    // drops after notes, so a note made and dropped within one interval is gone.
    const calls: Promise<unknown>[] = [];
    for (const [key, fields] of notes) calls.push(this.redis.hset(key, ...fields), this.redis.expire(key, ANSWERED_TTL_SEC));
    for (const [key, ids] of drops) calls.push(this.redis.hdel(key, ...ids));
    const w = Promise.all(calls).then(
      () => undefined,
      (err: unknown) => this.log.warn({ err }, "answered webhook deliveries not noted; a crash would post them again"),
    );
    this.writing = this.writing.then(() => w);
    return this.writing;
  }
}
