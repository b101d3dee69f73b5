// Per-notification counters and per-channel totals, folded from receipts by the tracker and kept in JetStream KV.
import type { KV } from "@nats-io/kv";

import { decodeJson } from "../core/codec.js";
import { hash53 } from "../core/hash53.js";
import { type Channel, COUNTERS_KEY, MSGID } from "../core/subjects.js";
import type { ContentChannel, ReceiptBatch, ReceiptEntry } from "../core/types.js";

/** Where a record's receipts were folded up to: the stream sequence of the last one, and when the stream stored it (µs since the epoch; 0: not known, written by an older version). */
export interface Fence {
  seq: number;
  seqAt: number;
}

/**
 * Whether a receipt at stream sequence `seq`, stored at `at` (µs), is not yet folded into a record whose fence is `f`:
 * past its sequence, or — nats-server's stream sequence went back after a leader loss and numbers are used again
 * (docs/operations.md, "nats-server version") — stored after the last one folded. A redelivered receipt (the tracker
 * died between writing and acking) is at or before the fence on both. A fence without a time goes by the sequence
 * alone. Pure.
 */
export const notFolded = (f: Fence, seq: number, at: number): boolean => seq > f.seq || (f.seqAt > 0 && at > f.seqAt);

/**
 * Moves fence `f` past a receipt just folded (stream sequence `seq`, stored at `at` µs): the fence is the receipt stored
 * last, so one folded out of order (stored earlier) leaves its time alone and raises only its sequence, if at all.
 */
export function advance(f: Fence, seq: number, at: number): void {
  if (at >= f.seqAt) {
    f.seq = seq;
    f.seqAt = at;
  } else if (seq > f.seq) f.seq = seq;
}

/** What happened to a notification so far. `seq` and `seqAt` are the last receipt folded in (the tracker's fence against replays: {@link notFolded}). */
export interface Counters extends Fence {
  /** Recipients the API accepted: a request's explicit recipients, or a campaign's segment members found so far. */
  accepted: number;
  /** Recipients decided by the shard actors (segment non-members are not recipients). */
  decided: number;
  queued: number;
  /** Recipients waiting for their quiet hours to end (deferred, not yet released). */
  deferred: number;
  /** Sends the provider accepted (a later bounce moves one to failed). */
  sent: number;
  /** Sends the provider (or the in-app client) confirmed as delivered; a subset of sent. */
  delivered: number;
  failed: Record<string, number>;
  /** Sends dropped because the notification expired before they could go (not in failed). */
  expired: number;
  suppressed: Record<string, number>;
  /** Recipients dropped by a cancel before their sends were built. */
  cancelled: number;
  /** Queued sends dropped by a cancel at the gateway. */
  cancelledSends: number;
  /** In-app sends no client acknowledged in time, replaced by their push (or other) fallback. */
  fallback: number;
  /** Recipients shed under overload by the shard actor, by reason (`max_delay`, `expired`): decided, never queued. */
  shed: Record<string, number>;
  /** Queued sends shed under overload at a gateway or the in-app dispatcher, by reason (not in failed). */
  shedSends: Record<string, number>;
  /** In-app items users marked seen / read. */
  seen: number;
  read: number;
  /** Recipients who opened (email pixel, app-reported push open, in-app read) / clicked; each counted once. */
  opened: number;
  clicked: number;
  /** Recipients whose notification was held for a digest (each digest is a notification of its own, with its own counters). */
  digested: number;
  /** Deferred recipients by release time (ms, as a string key): held, and released so far. The waves of a local-time campaign (or of quiet hours). */
  waves: Record<string, { held: number; released: number }>;
  updatedAt: number;
}

export const emptyCounters = (): Counters => ({
  seq: 0, seqAt: 0, accepted: 0, decided: 0, queued: 0, deferred: 0, sent: 0, delivered: 0, failed: {}, expired: 0, suppressed: {},
  cancelled: 0, cancelledSends: 0, fallback: 0, shed: {}, shedSends: {}, seen: 0, read: 0, opened: 0, clicked: 0, waves: {}, digested: 0, updatedAt: 0,
});

/** Counters written by an older version lack the newer fields: fill them with zeros. */
const complete = (c: Partial<Counters>): Counters => ({ ...emptyCounters(), ...c });

/** A failure reason that means "the notification expired first" (at the gateway, or after retries or waits). */
export const isExpiry = (reason: string | undefined): boolean => reason === "expired" || (reason?.startsWith("expired:") ?? false);

// Reasons come from providers and webhooks: an own-property read, so a reason named like an Object.prototype member counts from 0.
const bump = (m: Record<string, number>, k: string, by = 1): void => {
  m[k] = (Object.hasOwn(m, k) ? m[k] : 0) + by;
};

/** Folds one receipt batch into `c`. Pure apart from mutating `c`. */
export function fold(c: Counters, b: ReceiptBatch): void {
  c.decided += b.decided ?? 0;
  c.queued += b.queued ?? 0;
  c.deferred = c.deferred + (b.deferred ?? 0) - (b.released ?? 0);
  for (const [until, n] of Object.entries(b.waves ?? {})) {
    const w = Object.hasOwn(c.waves, until) ? c.waves[until] : (c.waves[until] = { held: 0, released: 0 });
    w.held += n;
  }
  if (b.released && b.releasedAt !== undefined) {
    const k = String(b.releasedAt);
    const w = Object.hasOwn(c.waves, k) ? c.waves[k] : (c.waves[k] = { held: 0, released: 0 });
    w.released += b.released;
  }
  for (const e of b.entries) {
    // Repeated by another copy of the send: the batch that recorded the outcome counts it.
    if (e.echo) continue;
    if (e.supersedes && Object.hasOwn(c.failed, e.supersedes) && c.failed[e.supersedes]) c.failed[e.supersedes]--;
    switch (e.outcome) {
      case "queued":
        c.queued++;
        break;
      case "deferred":
        c.deferred++;
        break;
      case "digested":
        c.digested++;
        break;
      case "sent":
        c.sent++;
        break;
      case "delivered":
        c.delivered++;
        break;
      case "failed":
        if (e.late) {
          // The provider took it, then reported it undeliverable: no longer sent, now failed. Not clamped at 0: the report
          // can be folded before the gateway's "sent" (a status callback that overtook the batch's receipts).
          c.sent--;
          bump(c.failed, e.reason ?? "unknown");
        } else if (isExpiry(e.reason)) c.expired++;
        else bump(c.failed, e.reason ?? "unknown");
        break;
      case "suppressed":
        bump(c.suppressed, e.reason ?? "unknown");
        break;
      case "cancelled":
        if (e.device) c.cancelledSends++;
        else c.cancelled++;
        break;
      case "fallback":
        c.fallback++;
        break;
      case "shed":
        // A recipient shed by the shard actor has no device; a send shed at a gateway has one (and was counted queued).
        bump(e.device ? c.shedSends : c.shed, e.reason ?? "unknown");
        break;
      case "seen":
        c.seen++;
        break;
      case "read":
        c.read++;
        break;
      case "opened":
        c.opened++;
        break;
      case "clicked":
        c.clicked++;
        break;
      default: {
        const never: never = e.outcome;
        throw new Error(`unknown outcome ${String(never)}`);
      }
    }
  }
}

/** Sum of a reason map. */
export const total = (m: Record<string, number>): number => Object.values(m).reduce((a, b) => a + b, 0);

/** Reads a notification's counters, or empty ones. */
export async function readCounters(kv: KV, nid: string): Promise<Counters> {
  const e = await kv.get(COUNTERS_KEY.notification(nid));
  return e && e.operation === "PUT" ? complete(decodeJson<Partial<Counters>>(e.value)) : emptyCounters();
}

/** Sends queued but not yet finished (sent, failed, expired, cancelled or shed at the gateway, or replaced by a fallback). */
export const outstanding = (c: Counters): number => c.queued - c.sent - total(c.failed) - c.expired - c.cancelledSends - total(c.shedSends) - c.fallback;

/** Everything shed under overload: recipients at the shard actor plus sends at the gateways, by reason. */
export function shedByReason(c: Counters): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of [c.shed, c.shedSends]) for (const [k, v] of Object.entries(m)) bump(out, k, v);
  return out;
}

/** The content channel an operator thinks in: APNs and FCM are both push. */
export const contentChannelOf = (c: Channel | undefined): ContentChannel | "webhook" | undefined => (c === "apns" || c === "fcm" ? "push" : c);

/** Delivery totals of one content channel across every notification. */
export interface ChannelTotal {
  sent: number;
  delivered: number;
  failed: number;
  expired: number;
  /** Sends shed under overload at the gateway (recipients shed by the shard actor have no channel yet). */
  shed: number;
  opened: number;
  clicked: number;
}

/** Per-channel totals since the cluster began counting, with the receipt folded in last ({@link Fence}). */
export interface ChannelTotals extends Fence {
  channels: Record<ContentChannel | "webhook", ChannelTotal>;
  updatedAt: number;
}

const zeroTotal = (): ChannelTotal => ({ sent: 0, delivered: 0, failed: 0, expired: 0, shed: 0, opened: 0, clicked: 0 });
export const emptyTotals = (): ChannelTotals => ({ seq: 0, seqAt: 0, channels: { push: zeroTotal(), email: zeroTotal(), sms: zeroTotal(), inapp: zeroTotal(), webhook: zeroTotal() }, updatedAt: 0 });


/** Folds one receipt entry into the per-channel totals (entries without a channel are recipient-level and skipped). */
export function foldTotal(t: ChannelTotals, e: ReceiptEntry): void {
  const ch = contentChannelOf(e.channel);
  if (!ch) return;
  const x = t.channels[ch];
  switch (e.outcome) {
    case "sent":
      x.sent++;
      break;
    case "delivered":
      x.delivered++;
      break;
    case "failed":
      if (e.late) x.sent--;
      if (isExpiry(e.reason) && !e.late) x.expired++;
      else x.failed++;
      break;
    case "shed":
      x.shed++;
      break;
    case "opened":
      x.opened++;
      break;
    case "clicked":
      x.clicked++;
      break;
    default:
      break;
  }
}

/** Reads the per-channel totals, or zeros. */
export async function readTotals(kv: KV): Promise<ChannelTotals> {
  const e = await kv.get(COUNTERS_KEY.totals);
  if (!e || e.operation !== "PUT") return emptyTotals();
  const t = decodeJson<ChannelTotals>(e.value);
  const z = emptyTotals();
  for (const ch of Object.keys(z.channels) as (keyof ChannelTotals["channels"])[]) z.channels[ch] = { ...zeroTotal(), ...t.channels?.[ch] };
  return { ...z, seq: t.seq ?? 0, seqAt: t.seqAt ?? 0, updatedAt: t.updatedAt ?? 0 };
}

/**
 * The original message ids ({@link MSGID.original}) of the receipt batches
 * folded lately, as 53-bit hashes, so a batch a stream lost and a publisher
 * published again under a new id (lib/flow/stream-reconciler.ts) is folded
 * once whether or not its first copy was folded before the stream lost it.
 * Two generations of `spanMs` each (an id is remembered between one and two
 * spans), each of at most `maxPerGeneration` ids (about 40 bytes each); in
 * memory only: a restarted tracker relies on its fences ({@link notFolded}).
 */
export class FoldedIds {
  private cur = new Set<number>();
  private prev = new Set<number>();
  private since: number;
  private readonly born: number;
  /** Whether a generation was ever cut short by its size: then the memory no longer answers for a whole span. */
  private overflowed = false;

  constructor(private readonly spanMs = 10 * 60_000, private readonly maxPerGeneration = 2_000_000, now = Date.now()) {
    this.since = now;
    this.born = now;
  }

  /**
   * Whether this memory alone knows if a batch stored at `storedAt` (ms) was folded: it was stored after the memory
   * began (no earlier tracker can have folded it) and less than one span ago (its id, if folded, is still here), and no
   * generation was ever cut short. Such a batch is folded exactly when {@link has} says no, whatever its sequence: a
   * receipt redelivered out of order (its first delivery never reached the tracker) is then still counted.
   */
  covers(storedAt: number, now = Date.now()): boolean {
    return !this.overflowed && storedAt >= this.born && now - storedAt < this.spanMs;
  }

  /** Whether a batch with message id `msgId` (or one it was published again as) was folded lately. */
  has(msgId: string, now = Date.now()): boolean {
    this.age(now);
    const h = hash53(MSGID.original(msgId));
    return this.cur.has(h) || this.prev.has(h);
  }

  /** Notes that the batch with message id `msgId` was folded. */
  add(msgId: string, now = Date.now()): void {
    this.age(now);
    this.cur.add(hash53(MSGID.original(msgId)));
  }

  private age(now: number): void {
    if (now - this.since < this.spanMs && this.cur.size < this.maxPerGeneration) return;
    if (this.cur.size >= this.maxPerGeneration) this.overflowed = true;
    // Idle for two spans: nothing is recent any more.
    this.prev = now - this.since >= 2 * this.spanMs ? new Set() : this.cur;
    this.cur = new Set();
    this.since = now;
  }
}
