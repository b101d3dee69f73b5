// Per-notification counters, folded from receipts by the tracker and kept in JetStream KV.
import type { KV } from "@nats-io/kv";
import { decodeJson } from "./codec.js";
import type { ReceiptBatch } from "./types.js";

/** What happened to a notification so far. `seq` is the last receipt stream sequence folded in (the tracker's fence against replays). */
export interface Counters {
  seq: number;
  /** Recipients decided by the shard actors (segment non-members are not recipients). */
  decided: number;
  queued: number;
  /** Recipients waiting for their quiet hours to end (deferred, not yet released). */
  deferred: number;
  sent: number;
  failed: Record<string, number>;
  suppressed: Record<string, number>;
  /** Recipients dropped by a cancel before their sends were built. */
  cancelled: number;
  /** Queued sends dropped by a cancel at the gateway. */
  cancelledSends: number;
  /** In-app sends no client acknowledged in time, replaced by their push (or other) fallback. */
  fallback: number;
  /** In-app items users marked seen / read. */
  seen: number;
  read: number;
  updatedAt: number;
}

export const emptyCounters = (): Counters => ({ seq: 0, decided: 0, queued: 0, deferred: 0, sent: 0, failed: {}, suppressed: {}, cancelled: 0, cancelledSends: 0, fallback: 0, seen: 0, read: 0, updatedAt: 0 });

/** Folds one receipt batch into `c`. Pure apart from mutating `c`. */
export function fold(c: Counters, b: ReceiptBatch): void {
  c.decided += b.decided ?? 0;
  c.queued += b.queued ?? 0;
  c.deferred = (c.deferred ?? 0) + (b.deferred ?? 0) - (b.released ?? 0);
  for (const e of b.entries) {
    if (e.supersedes && c.failed[e.supersedes]) c.failed[e.supersedes]!--;
    switch (e.outcome) {
      case "queued":
        c.queued++;
        break;
      case "deferred":
        c.deferred = (c.deferred ?? 0) + 1;
        break;
      case "sent":
        c.sent++;
        break;
      case "failed":
        c.failed[e.reason ?? "unknown"] = (c.failed[e.reason ?? "unknown"] ?? 0) + 1;
        break;
      case "suppressed":
        c.suppressed[e.reason ?? "unknown"] = (c.suppressed[e.reason ?? "unknown"] ?? 0) + 1;
        break;
      case "cancelled":
        if (e.device) c.cancelledSends++;
        else c.cancelled++;
        break;
      case "fallback":
        c.fallback = (c.fallback ?? 0) + 1;
        break;
      case "seen":
        c.seen = (c.seen ?? 0) + 1;
        break;
      case "read":
        c.read = (c.read ?? 0) + 1;
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
  const e = await kv.get(nid);
  return e && e.operation === "PUT" ? decodeJson<Counters>(e.value) : emptyCounters();
}

/** Sends queued but not yet finished (sent, failed or cancelled at the gateway). */
export const outstanding = (c: Counters): number => c.queued - c.sent - total(c.failed) - c.cancelledSends - (c.fallback ?? 0);
