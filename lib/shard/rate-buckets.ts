// Per-user frequency caps: token buckets kept as one number each (GCRA), on a monotonic clock, checkpointable.
import { hash53 } from "../core/hash53.js";
import { NumberMap } from "../core/number-map.js";
import { ChangeJournal, forEachPacked, packChanged, packEntries } from "../core/pair-pack.js";

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
  private readonly tat = new NumberMap();
  /** Buckets taken from since the last pack, for {@link packChanges}. */
  private readonly changed = new ChangeJournal();

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
    if (commit) {
      this.tat.set(k, next);
      this.changed.note(k);
    }
    return { ok: true, left: Math.floor((now - (next - cap.count * interval)) / interval), retryInMs: 0 };
  }

  /**
   * Buckets still holding less than full, packed as (key, ms until full) for
   * a checkpoint (lib/core/pair-pack.ts). Full buckets are dropped (they equal a
   * new one) and pruned from memory.
   */
  pack(): Buffer {
    const now = this.mono();
    this.changed.clear();
    return packEntries(this.tat, (tat) => (tat > now ? Math.ceil(tat - now) : null));
  }

  /** The buckets taken from since the last {@link pack} or {@link packChanges}, packed the same way (restored after the full pack, in order, each with its own elapsed time). */
  packChanges(): Buffer {
    const now = this.mono();
    return packChanged(this.tat, this.changed, (tat) => (tat > now ? Math.ceil(tat - now) : null));
  }

  /** Restores buckets packed `elapsedMs` of wall time ago at offset `at` of `b` (time passed refills them); returns the offset after them. */
  restore(b: Buffer, elapsedMs: number, at = 0): number {
    const now = this.mono();
    return forEachPacked(b, at, (k, ahead) => {
      const left = ahead - Math.max(0, elapsedMs);
      if (left > 0) this.tat.set(k, now + left);
    });
  }
}
