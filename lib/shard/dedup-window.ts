// The shard actor's dedup window: keys seen in the last N hours, as 53-bit hashes with expiry, checkpointable.
import { hash53 } from "../core/hash53.js";
import { NumberMap } from "../core/number-map.js";
import { ChangeJournal, forEachPacked, packChanged, packEntries } from "../core/pair-pack.js";

/**
 * Remembers keys for `windowMs` of wall time. Keys are hashed (see
 * {@link hash53}); expiry times are wall-clock ms so a snapshot restores
 * exactly in another process. `now` is injectable for tests.
 */
export class DedupWindow {
  private readonly until = new NumberMap();
  /** Keys added since the last pack, for {@link packChanges}. */
  private readonly changed = new ChangeJournal();

  constructor(private readonly windowMs: number, private readonly now: () => number = Date.now) {}

  get size(): number {
    return this.until.size;
  }

  /** Whether `key` was recorded and has not expired. */
  has(key: string): boolean {
    return this.hasHash(hash53(key));
  }

  /** Records `key` until now + window. */
  add(key: string): void {
    this.addHash(hash53(key));
  }

  /** {@link has} for a key already hashed with {@link hash53} (the hot path hashes once). */
  hasHash(h: number): boolean {
    const u = this.until.get(h);
    return u !== undefined && u > this.now();
  }

  addHash(h: number): void {
    this.until.set(h, this.now() + this.windowMs);
    this.changed.note(h);
  }

  /** Live entries packed as (hash, expiry ms) for a checkpoint (lib/core/pair-pack.ts); drops expired ones from memory. */
  pack(): Buffer {
    const t = this.now();
    this.changed.clear();
    return packEntries(this.until, (u) => (u > t ? u : null));
  }

  /** The entries added since the last {@link pack} or {@link packChanges}, packed the same way (an incremental checkpoint: restored after the full one, in order). */
  packChanges(): Buffer {
    const t = this.now();
    return packChanged(this.until, this.changed, (u) => (u > t ? u : null));
  }

  /** Restores entries packed by {@link pack} at offset `at` of `b`; returns the offset after them. */
  restore(b: Buffer, at = 0): number {
    const t = this.now();
    return forEachPacked(b, at, (k, u) => void (u > t && this.until.set(k, u)));
  }
}
