// Per-user frequency caps: token buckets kept as one number each (GCRA), on a monotonic clock, checkpointable.
import { hash53 } from "./hash53.js";

/** A cap: at most `count` sends per `periodSec`, refilled continuously. */
export interface Cap {
  count: number;
  periodSec: number;
}

/** What a bucket check saw, for decision trails. */
export interface BucketCheck {
  ok: boolean;
  /** Whole tokens left after this send (or now, when refused). */
  left: number;
  /** When refused: milliseconds until one token is back. */
  retryInMs: number;
}

/**
 * Token buckets keyed by (user, category). Each bucket is its "theoretical
 * arrival time" (GCRA): a send is allowed when `tat - burst × interval <= now`
 * and then moves `tat` one interval on. Equivalent to a bucket of `count`
 * tokens refilling one per `periodSec / count`. Times are a monotonic clock
 * in ms (`performance.now()` by default), so wall-clock jumps change nothing;
 * snapshots convert to wall time so a new owner can restore them.
 */
export class RateBuckets {
  private readonly tat = new Map<number, number>();

  constructor(private readonly mono: () => number = () => performance.now()) {}

  /** Number of live buckets. */
  get size(): number {
    return this.tat.size;
  }

  /**
   * Checks `user`'s `category` bucket under `cap`. With `commit` a granted
   * token is taken; a refusal never changes state.
   */
  take(user: string, category: string, cap: Cap, commit = true): BucketCheck {
    return this.takeHash(RateBuckets.key(user, category), cap, commit);
  }

  /** The bucket key of (user, category). */
  static key(user: string, category: string): number {
    return hash53(`${user}\u0000${category}`);
  }

  /** {@link take} for a key from {@link RateBuckets.key} (the hot path hashes once). */
  takeHash(k: number, cap: Cap, commit = true): BucketCheck {
    const now = this.mono();
    const interval = (cap.periodSec * 1000) / cap.count;
    const tat = Math.max(this.tat.get(k) ?? now, now);
    const burstStart = tat - cap.count * interval;
    if (burstStart > now - interval) {
      // The next token arrives when tat - (count-1)·interval reaches now.
      return { ok: false, left: 0, retryInMs: Math.ceil(burstStart + interval - now) };
    }
    const next = tat + interval;
    if (commit) this.tat.set(k, next);
    return { ok: true, left: Math.floor((now - (next - cap.count * interval)) / interval), retryInMs: 0 };
  }

  /**
   * Buckets still holding less than full: [key, ms until full] pairs for a
   * checkpoint (full buckets are dropped, they equal a new one). Prunes full
   * buckets from memory as a side effect.
   */
  snapshot(): [number, number][] {
    const now = this.mono();
    const out: [number, number][] = [];
    for (const [k, tat] of this.tat) {
      if (tat <= now) this.tat.delete(k);
      else out.push([k, Math.ceil(tat - now)]);
    }
    return out;
  }

  /** Restores a snapshot taken `elapsedMs` of wall time ago (time passed meanwhile refills the buckets). */
  restore(entries: readonly [number, number][], elapsedMs: number): void {
    const now = this.mono();
    for (const [k, ahead] of entries) {
      const left = ahead - Math.max(0, elapsedMs);
      if (left > 0) this.tat.set(k, now + left);
    }
  }
}
