// A hash map from 53-bit hashes to numbers in two typed arrays: about 24 bytes per entry, against 60–80 for a Map<number, number> of such keys.

/** Marks a free slot (keys are hashes: non-negative integers below 2^53). */
const FREE = -1;
const MIN_CAPACITY = 16;

/**
 * A map from non-negative integer keys below 2^53 ({@link hash53} values) to
 * numbers, held in one Float64Array of keys and one of values with linear
 * probing, at most 3/4 full; deletion shifts the following entries back, so
 * there are no tombstones. A JavaScript Map of such keys boxes each key and
 * value (16 bytes each) besides its own entry and table: the shard actor's
 * dedup window and rate buckets hold one entry per recipient, millions per
 * process (docs/architecture.md, "Memory per recipient").
 */
export class NumberMap {
  private keys: Float64Array;
  private vals: Float64Array;
  private mask: number;
  private n = 0;

  constructor(capacity = MIN_CAPACITY) {
    let c = MIN_CAPACITY;
    while (c < capacity) c *= 2;
    this.keys = new Float64Array(c).fill(FREE);
    this.vals = new Float64Array(c);
    this.mask = c - 1;
  }

  /** Number of entries. */
  get size(): number {
    return this.n;
  }

  /** Bytes the two arrays take. */
  get bytes(): number {
    return this.keys.byteLength + this.vals.byteLength;
  }

  private slotOf(k: number): number {
    // Both halves of the key mixed (a hash's low bits alone would do; mixing also spreads small test keys).
    return Math.imul((k >>> 0) ^ Math.floor(k / 0x100000000), 0x9e3779b1) >>> 0 & this.mask;
  }

  /** The slot holding `k`, or -1. */
  private find(k: number): number {
    for (let i = this.slotOf(k); ; i = (i + 1) & this.mask) {
      const x = this.keys[i];
      if (x === k) return i;
      if (x === FREE) return -1;
    }
  }

  /** The value of `k`, or undefined. */
  get(k: number): number | undefined {
    const i = this.find(k);
    return i < 0 ? undefined : this.vals[i];
  }

  has(k: number): boolean {
    return this.find(k) >= 0;
  }

  /** Sets `k` to `v`. Throws RangeError for a key that is not a non-negative integer below 2^53. */
  set(k: number, v: number): void {
    if (!(k >= 0 && Number.isSafeInteger(k))) throw new RangeError(`NumberMap key must be a non-negative safe integer, got ${k}`);
    if ((this.n + 1) * 4 > this.keys.length * 3) this.resize(this.keys.length * 2);
    for (let i = this.slotOf(k); ; i = (i + 1) & this.mask) {
      const x = this.keys[i];
      if (x === k) {
        this.vals[i] = v;
        return;
      }
      if (x === FREE) {
        this.keys[i] = k;
        this.vals[i] = v;
        this.n++;
        return;
      }
    }
  }

  /** Deletes `k`; returns whether it was there. */
  delete(k: number): boolean {
    let i = this.find(k);
    if (i < 0) return false;
    // Backward-shift deletion: move later entries of the probe run into the hole when their home slot allows it.
    for (let j = (i + 1) & this.mask; ; j = (j + 1) & this.mask) {
      const x = this.keys[j];
      if (x === FREE) break;
      const home = this.slotOf(x);
      // Entry j may move to i when i lies cyclically between its home and j.
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        this.keys[i] = x;
        this.vals[i] = this.vals[j];
        i = j;
      }
    }
    this.keys[i] = FREE;
    this.n--;
    return true;
  }

  /** Visits every entry (in slot order). The map must not change during the visit; use {@link retain} to drop entries. */
  forEach(visit: (v: number, k: number) => void): void {
    const { keys, vals } = this;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== FREE) visit(vals[i], keys[i]);
  }

  /** Keeps only the entries for which `keep(v, k)` is true, and shrinks the arrays when they became mostly empty. */
  retain(keep: (v: number, k: number) => boolean): void {
    const { keys, vals } = this;
    let kept = 0;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== FREE && keep(vals[i], keys[i])) kept++;
    if (kept === this.n) return;
    let c = MIN_CAPACITY;
    while (kept * 4 > c * 3 || c < kept * 2) c *= 2;
    const old = { keys, vals };
    this.keys = new Float64Array(c).fill(FREE);
    this.vals = new Float64Array(c);
    this.mask = c - 1;
    this.n = 0;
    for (let i = 0; i < old.keys.length; i++) {
      const k = old.keys[i];
      if (k !== FREE && keep(old.vals[i], k)) this.set(k, old.vals[i]);
    }
  }

  private resize(c: number): void {
    const old = { keys: this.keys, vals: this.vals };
    this.keys = new Float64Array(c).fill(FREE);
    this.vals = new Float64Array(c);
    this.mask = c - 1;
    this.n = 0;
    for (let i = 0; i < old.keys.length; i++) if (old.keys[i] !== FREE) this.set(old.keys[i], old.vals[i]);
  }
}
