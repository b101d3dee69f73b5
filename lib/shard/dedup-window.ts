// The shard actor's dedup window: keys seen in the last N hours, as 53-bit hashes in sets by expiry (a few generations), checkpointable.
import { hash53 } from "../core/hash53.js";
import { NumberMap } from "../core/number-map.js";
import { ChangeJournal, forEachPacked, packPairs } from "../core/pair-pack.js";

/** Generations per window: an entry lives from one window to a quarter more. */
const GENERATIONS = 4;

/** The keys that expire together, at `dropAt`. */
interface Generation {
  dropAt: number;
  keys: NumberMap;
}

/**
 * Remembers keys for at least `windowMs` of wall time and at most a quarter
 * longer. Keys are hashed (see {@link hash53}) and held in sets by expiry:
 * a key added at `t` joins the set that expires at the first multiple of
 * `windowMs / 4` from `t + windowMs` on, so at most five sets are live and a
 * key costs one 8-byte slot (at most 3/4 full), not a key and an expiry
 * each. Expiry times are wall-clock ms, so a snapshot restores exactly in
 * another process. `now` is injectable for tests.
 */
export class DedupWindow {
  /** Live and expired sets, soonest expiry first. */
  private gens: Generation[] = [];
  private readonly slotMs: number;
  /** Keys added since the last pack, for {@link packChanges}. */
  private readonly changed = new ChangeJournal();

  constructor(private readonly windowMs: number, private readonly now: () => number = Date.now) {
    this.slotMs = Math.max(1, windowMs / GENERATIONS);
  }

  /** Keys held (those expired but not yet dropped by a pack included). */
  get size(): number {
    let n = 0;
    for (const g of this.gens) n += g.keys.size;
    return n;
  }

  /** Bytes the sets' arrays take. */
  get bytes(): number {
    let n = 0;
    for (const g of this.gens) n += g.keys.bytes;
    return n;
  }

  /** Whether `key` was recorded and has not expired. */
  has(key: string): boolean {
    return this.hasHash(hash53(key));
  }

  /** Records `key` for the window. */
  add(key: string): void {
    this.addHash(hash53(key));
  }

  /** {@link has} for a key already hashed with {@link hash53} (the hot path hashes once). */
  hasHash(h: number): boolean {
    return this.expiryOf(h, this.now()) !== null;
  }

  addHash(h: number): void {
    this.genUntil(this.now() + this.windowMs).keys.set(h);
    this.changed.note(h);
  }

  /** The set whose keys expire at the first multiple of the slot from `until` on, made if there is none. */
  private genUntil(until: number): Generation {
    const dropAt = Math.ceil(until / this.slotMs) * this.slotMs;
    const gens = this.gens;
    let i = gens.length;
    while (i > 0 && gens[i - 1].dropAt > dropAt) i--;
    if (i > 0 && gens[i - 1].dropAt === dropAt) return gens[i - 1];
    const g: Generation = { dropAt, keys: new NumberMap(16, "none") };
    gens.splice(i, 0, g);
    // A new set (every quarter window at most): expired ones go, whether or not a checkpoint packed them.
    const t = this.now();
    if (gens[0].dropAt <= t) this.gens = gens.filter((x) => x.dropAt > t);
    return g;
  }

  /** The expiry of `h` in the newest live set holding it, or null. */
  private expiryOf(h: number, t: number): number | null {
    for (let i = this.gens.length - 1; i >= 0; i--) {
      const g = this.gens[i];
      if (g.dropAt <= t) return null;
      if (g.keys.has(h)) return g.dropAt;
    }
    return null;
  }

  /**
   * Live entries packed as (hash, expiry ms) for a checkpoint, `u32 count, then (f64, f64)*` (lib/core/pair-pack.ts);
   * drops expired sets from memory.
   */
  pack(): Buffer {
    const t = this.now();
    this.gens = this.gens.filter((g) => g.dropAt > t);
    this.changed.reset(this.size);
    return packPairs(this.size, (put) => {
      for (const g of this.gens) g.keys.forEach((_v, k) => put(k, g.dropAt));
    });
  }

  /** Whether more keys were added since the last {@link pack} than it packed: the next checkpoint must be whole ({@link packChanges} would throw). */
  get changesOverflowed(): boolean {
    return this.changed.overflowed;
  }

  /** The entries added since the last {@link pack} or {@link packChanges}, packed the same way (an incremental checkpoint: restored after the full one, in order). Throws when {@link changesOverflowed}. */
  packChanges(): Buffer {
    const t = this.now();
    const b = packPairs(this.changed.size, (put) =>
      this.changed.forEachOnce((k) => {
        const u = this.expiryOf(k, t);
        if (u !== null) put(k, u);
      }),
    );
    this.changed.clear();
    return b;
  }

  /** Restores entries packed by {@link pack} at offset `at` of `b` (each into the set expiring at or after its own expiry); returns the offset after them. */
  restore(b: Buffer, at = 0): number {
    const t = this.now();
    return forEachPacked(b, at, (k, u) => void (u > t && this.genUntil(u).keys.set(k)));
  }
}
