// A hash map (or set) of 53-bit hashes in typed arrays: 8 to 16 bytes a slot, at most 3/4 full, against 60–80 bytes an entry for a Map<number, number> of such keys.

/** Marks a free slot (keys are hashes: non-negative integers below 2^53). */
const FREE = -1;
const MIN_CAPACITY = 16;
/** At most this full; a full table grows by half. Between the two, a table is 1/2 to 3/4 full (before: 3/8 to 3/4, doubling). */
const MAX_LOAD = 0.75;
const GROWTH = 1.5;

/**
 * What a {@link NumberMap} holds per key: any number (`f64`, 16 bytes a slot), an integer 0–2^32-1 (`u32`, 12 bytes
 * a slot), or nothing, a set (`none`, 8 bytes a slot; every value reads 0).
 */
export type NumberMapValues = "f64" | "u32" | "none";

type Vals = Float64Array | Uint32Array | null;
const allocVals = (kind: NumberMapValues, c: number): Vals => (kind === "f64" ? new Float64Array(c) : kind === "u32" ? new Uint32Array(c) : null);

/** The capacity a table of `n` entries is rebuilt with: the smallest of the growth series at most {@link MAX_LOAD} full, and at least twice `n`. */
function capacityFor(n: number): number {
  let c = MIN_CAPACITY;
  while (n > c * MAX_LOAD || c < n * 2) c = Math.ceil(c * GROWTH);
  return c;
}

/**
 * A map from non-negative integer keys below 2^53 ({@link hash53} values) to
 * numbers, held in one Float64Array of keys and (unless a set) one typed
 * array of values with linear probing, at most 3/4 full and grown by half
 * (any capacity: a key's home slot is its mixed hash (31 bits) modulo the
 * capacity); deletion shifts the following entries back, so there are no
 * tombstones. A JavaScript Map of such keys boxes each key and value (16
 * bytes each) besides its own entry and table: the shard actor's dedup window
 * and rate buckets hold one entry per recipient, millions per process
 * (docs/architecture.md, "Memory per recipient"). A `u32` map stores values
 * as unsigned 32-bit integers (others are truncated: the caller's contract).
 */
export class NumberMap {
  private keys: Float64Array;
  private vals: Vals;
  private cap: number;
  private n = 0;

  constructor(capacity = MIN_CAPACITY, private readonly kind: NumberMapValues = "f64") {
    const c = Math.max(MIN_CAPACITY, Math.ceil(capacity));
    this.keys = new Float64Array(c).fill(FREE);
    this.vals = allocVals(kind, c);
    this.cap = c;
  }

  /** Number of entries. */
  get size(): number {
    return this.n;
  }

  /** Bytes the arrays take. */
  get bytes(): number {
    return this.keys.byteLength + (this.vals?.byteLength ?? 0);
  }

  private slotOf(k: number): number {
    // Both halves of the key mixed (a hash's low bits alone would do; mixing also spreads small test keys), modulo the
    // capacity. Not scaled by the high bits: a table filled in another's slot order (a restore, a rebuild) would then
    // fill its first slots first and probe quadratically long.
    return (Math.imul((k >>> 0) ^ Math.floor(k / 0x100000000), 0x9e3779b1) >>> 1) % this.cap;
  }

  /** The slot holding `k`, or -1. */
  private find(k: number): number {
    const { keys, cap } = this;
    for (let i = this.slotOf(k); ; i = i + 1 === cap ? 0 : i + 1) {
      const x = keys[i];
      if (x === k) return i;
      if (x === FREE) return -1;
    }
  }

  /** The value of `k` (0 for a set's member), or undefined. */
  get(k: number): number | undefined {
    const i = this.find(k);
    return i < 0 ? undefined : this.vals ? this.vals[i] : 0;
  }

  has(k: number): boolean {
    return this.find(k) >= 0;
  }

  /** Sets `k` to `v` (a set ignores `v`). Throws RangeError for a key that is not a non-negative integer below 2^53. */
  set(k: number, v = 0): void {
    if (!(k >= 0 && Number.isSafeInteger(k))) throw new RangeError(`NumberMap key must be a non-negative safe integer, got ${k}`);
    if (this.n + 1 > this.cap * MAX_LOAD) this.rebuild(Math.ceil(this.cap * GROWTH), () => true);
    const { keys, vals, cap } = this;
    for (let i = this.slotOf(k); ; i = i + 1 === cap ? 0 : i + 1) {
      const x = keys[i];
      if (x === k) {
        if (vals) vals[i] = v;
        return;
      }
      if (x === FREE) {
        keys[i] = k;
        if (vals) vals[i] = v;
        this.n++;
        return;
      }
    }
  }

  /** Deletes `k`; returns whether it was there. */
  delete(k: number): boolean {
    let i = this.find(k);
    if (i < 0) return false;
    const { keys, vals, cap } = this;
    // Backward-shift deletion: move later entries of the probe run into the hole when their home slot allows it.
    for (let j = i + 1 === cap ? 0 : i + 1; ; j = j + 1 === cap ? 0 : j + 1) {
      const x = keys[j];
      if (x === FREE) break;
      const home = this.slotOf(x);
      // Entry j may move to i when i lies cyclically between its home and j.
      if (i <= j ? home <= i || home > j : home <= i && home > j) {
        keys[i] = x;
        if (vals) vals[i] = vals[j];
        i = j;
      }
    }
    keys[i] = FREE;
    this.n--;
    return true;
  }

  /** Visits every entry (in slot order). The map must not change during the visit; use {@link retain} to drop entries. */
  forEach(visit: (v: number, k: number) => void): void {
    const { keys, vals } = this;
    for (let i = 0; i < keys.length; i++) if (keys[i] !== FREE) visit(vals ? vals[i] : 0, keys[i]);
  }

  /** Keeps only the entries for which `keep(v, k)` is true, and shrinks the arrays when they became mostly empty. */
  retain(keep: (v: number, k: number) => boolean): void {
    let kept = 0;
    this.forEach((v, k) => void (keep(v, k) && kept++));
    if (kept === this.n) return;
    this.rebuild(capacityFor(kept), keep);
  }

  /** Rebuilds the table with capacity `c`, keeping the entries `keep` accepts. */
  private rebuild(c: number, keep: (v: number, k: number) => boolean): void {
    const old = { keys: this.keys, vals: this.vals };
    this.keys = new Float64Array(c).fill(FREE);
    this.vals = allocVals(this.kind, c);
    this.cap = c;
    this.n = 0;
    for (let i = 0; i < old.keys.length; i++) {
      const k = old.keys[i];
      if (k === FREE) continue;
      const v = old.vals ? old.vals[i] : 0;
      if (keep(v, k)) this.set(k, v);
    }
  }
}
