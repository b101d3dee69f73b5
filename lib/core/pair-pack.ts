// Packs number→number maps as binary columns for checkpoints (no per-entry arrays: a shard's windows hold up to millions of entries).
import { NumberMap } from "./number-map.js";

/**
 * Packs at most `max` pairs as `u32 count, then (f64 key, f64 value)*`: `fill` calls `put` once per pair. The one
 * writer of the format {@link forEachPacked} reads.
 */
export function packPairs(max: number, fill: (put: (k: number, v: number) => void) => void): Buffer {
  const b = Buffer.allocUnsafe(4 + max * 16);
  let o = 4;
  fill((k, v) => {
    b.writeDoubleLE(k, o);
    b.writeDoubleLE(v, o + 8);
    o += 16;
  });
  b.writeUInt32LE((o - 4) / 16, 0);
  return b.subarray(0, o);
}

/**
 * Packs the entries of `m` for which `value(v)` is not null with {@link packPairs}. Entries whose `value` is null are
 * deleted from `m` (expired), so packing also prunes.
 */
export function packEntries(m: NumberMap, value: (v: number) => number | null): Buffer {
  let n = 0;
  const b = packPairs(m.size, (put) =>
    m.forEach((v, k) => {
      const x = value(v);
      if (x === null) return;
      put(k, x);
      n++;
    }),
  );
  if (n < m.size) m.retain((v) => value(v) !== null);
  return b;
}

/** Visits the entries packed at `at` in `b`; returns the offset after them. */
export function forEachPacked(b: Buffer, at: number, visit: (k: number, v: number) => void): number {
  const n = b.readUInt32LE(at);
  let o = at + 4;
  for (let i = 0; i < n; i++, o += 16) visit(b.readDoubleLE(o), b.readDoubleLE(o + 8));
  return o;
}

/** A journal's smallest array, and the fewest notes it keeps before it may overflow. */
const JOURNAL_MIN = 1024;

/**
 * The keys of a {@link NumberMap} written since it was last packed, in a growable Float64Array (a key written twice is
 * noted twice; {@link packChanged} writes it once). Lets a checkpoint write only what changed since the last one.
 *
 * Bounded: once the notes outnumber the entries of the last whole pack ({@link ChangeJournal.reset}; at least 1,024),
 * the changes would be as large as the whole state, so the journal drops its notes, keeps none until the next
 * `reset`, and reports {@link overflowed}: the next write must be whole. A map filling up from nothing (a shard's
 * first campaign) then holds no journal as large as itself.
 */
export class ChangeJournal {
  private keys = new Float64Array(JOURNAL_MIN);
  private n = 0;
  /** Notes kept at most before the journal overflows (at least {@link JOURNAL_MIN}). */
  private limit = JOURNAL_MIN;
  private over = false;

  /** Number of notes (with repeats). */
  get size(): number {
    return this.n;
  }

  /** Whether notes were dropped since the last {@link reset}: only a whole pack is correct then. */
  get overflowed(): boolean {
    return this.over;
  }

  /** Notes that `k` was written. */
  note(k: number): void {
    if (this.over) return;
    if (this.n >= this.limit) {
      this.over = true;
      this.n = 0;
      this.keys = new Float64Array(JOURNAL_MIN);
      return;
    }
    if (this.n === this.keys.length) {
      const bigger = new Float64Array(Math.min(this.keys.length * 2, this.limit));
      bigger.set(this.keys);
      this.keys = bigger;
    }
    this.keys[this.n++] = k;
  }

  /** Forgets every note (after a pack of the changes); an overflowed journal stays overflowed. */
  clear(): void {
    this.n = 0;
    if (this.keys.length > 65_536) this.keys = new Float64Array(JOURNAL_MIN);
  }

  /** Forgets every note after a whole pack of `entries` entries: notes are kept again, up to `max(entries, 1024)`. */
  reset(entries: number): void {
    this.clear();
    this.over = false;
    this.limit = Math.max(JOURNAL_MIN, entries);
  }

  /** Visits each noted key once, in the order first noted. Throws when {@link overflowed}: its notes are gone, only a whole pack is correct. */
  forEachOnce(visit: (k: number) => void): void {
    if (this.over) throw new Error("change journal overflowed since the last whole pack: the changes cannot be packed alone (pack whole)");
    const seen = new NumberMap(this.n);
    for (let i = 0; i < this.n; i++) {
      const k = this.keys[i];
      if (seen.has(k)) continue;
      seen.set(k, 1);
      visit(k);
    }
  }
}

/**
 * Packs, in the format of {@link packEntries}, the entries of `m` noted in `changed` whose `value(v)` is not null (a
 * key no longer in `m` is skipped: its entry expired, and a restore drops it by its own time), then clears `changed`.
 */
export function packChanged(m: NumberMap, changed: ChangeJournal, value: (v: number) => number | null): Buffer {
  const b = packPairs(Math.min(changed.size, m.size), (put) =>
    changed.forEachOnce((k) => {
      const v = m.get(k);
      const x = v === undefined ? null : value(v);
      if (x !== null) put(k, x);
    }),
  );
  changed.clear();
  return b;
}
