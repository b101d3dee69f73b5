// Per-user frequency caps: token buckets kept as one number each (GCRA), on a monotonic clock, checkpointable.
import { hash53Of2 } from "../core/hash53.js";
import { NumberMap } from "../core/number-map.js";
import { ChangeJournal, forEachPacked, packChanged, packEntries } from "../core/pair-pack.js";

/** How far the monotonic clock may run past {@link RateBuckets}' base before the base moves on. */
const REBASE_MS = 15 * 86_400_000;

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
 * snapshots convert to wall time so a new owner can restore them. Each
 * `tat` is held as whole ms after a base time, an unsigned 32-bit integer (12
 * bytes a bucket with its key); the base moves on every 15 days (a cap's
 * period is at most 30: a value stays below 2^32).
 */
export class RateBuckets {
  private tat = new NumberMap(16, "u32");
  /** Buckets taken from since the last pack, for {@link packChanges}. */
  private readonly changed = new ChangeJournal();
  /** What the values count from (the monotonic clock, ms). */
  private base: number;

  constructor(private readonly mono: () => number = () => performance.now()) {
    this.base = mono();
  }

  /** Number of live buckets. */
  get size(): number {
    return this.tat.size;
  }

  /** Bytes the table's arrays take. */
  get bytes(): number {
    return this.tat.bytes;
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
    return hash53Of2(user, RateBuckets.suffix(category));
  }

  /** What follows the user in the key of `category`'s buckets: `RateBuckets.key(u, c) === hash53Of2(u, RateBuckets.suffix(c))`, the suffix built once per notification. */
  static suffix(category: string): string {
    return `\u0000${category}`;
  }

  /** The clock now, with the base moved on first when it is too far behind (or ahead: a test's clock). */
  private clock(): number {
    const now = this.mono();
    if (now < this.base || now - this.base > REBASE_MS) this.rebase(now);
    return now;
  }

  /** Counts every value from `now` on; buckets already full are dropped. */
  private rebase(now: number): void {
    const next = new NumberMap(this.tat.size * 2, "u32");
    this.tat.forEach((v, k) => {
      const tat = this.base + v;
      if (tat > now) next.set(k, Math.ceil(tat - now));
    });
    this.tat = next;
    this.base = now;
  }

  /** {@link take} for a key from {@link RateBuckets.key} (the hot path hashes once). */
  takeHash(k: number, cap: Cap, commit = true): BucketCheck {
    const now = this.clock();
    const interval = (cap.periodSec * 1000) / cap.count;
    const v = this.tat.get(k);
    const tat = v === undefined ? now : Math.max(this.base + v, now);
    const burstStart = tat - cap.count * interval;
    if (burstStart > now - interval) {
      // The next token arrives when tat - (count-1)·interval reaches now.
      return { ok: false, left: 0, retryInMs: Math.ceil(burstStart + interval - now) };
    }
    // Whole ms, rounded up: a bucket refills at most a millisecond late, never early.
    const next = this.base + Math.ceil(tat + interval - this.base);
    if (commit) {
      this.tat.set(k, next - this.base);
      this.changed.note(k);
    }
    return { ok: true, left: Math.floor((now - (next - cap.count * interval)) / interval), retryInMs: 0 };
  }

  /** `ms until full` of a value, or null when full. */
  private ahead(now: number): (v: number) => number | null {
    return (v) => (this.base + v > now ? Math.ceil(this.base + v - now) : null);
  }

  /**
   * Buckets still holding less than full, packed as (key, ms until full) for
   * a checkpoint (lib/core/pair-pack.ts). Full buckets are dropped (they equal a
   * new one) and pruned from memory.
   */
  pack(): Buffer {
    const now = this.clock();
    const b = packEntries(this.tat, this.ahead(now));
    this.changed.reset(this.tat.size);
    return b;
  }

  /** Whether more buckets were taken from since the last {@link pack} than it packed: the next checkpoint must be whole ({@link packChanges} would throw). */
  get changesOverflowed(): boolean {
    return this.changed.overflowed;
  }

  /** The buckets taken from since the last {@link pack} or {@link packChanges}, packed the same way (restored after the full pack, in order, each with its own elapsed time). Throws when {@link changesOverflowed}. */
  packChanges(): Buffer {
    return packChanged(this.tat, this.changed, this.ahead(this.clock()));
  }

  /** Restores buckets packed `elapsedMs` of wall time ago at offset `at` of `b` (time passed refills them); returns the offset after them. */
  restore(b: Buffer, elapsedMs: number, at = 0): number {
    const now = this.clock();
    return forEachPacked(b, at, (k, ahead) => {
      const left = ahead - Math.max(0, elapsedMs);
      if (left > 0) this.tat.set(k, Math.ceil(now + left - this.base));
    });
  }
}
