// Packs number→number maps as binary columns for checkpoints (no per-entry arrays: a shard's windows hold up to millions of entries).
import type { NumberMap } from "./number-map.js";

/**
 * Packs the entries of `m` for which `value(v)` is not null as
 * `u32 count, then (f64 key, f64 value)*`. Entries whose `value` is null are
 * deleted from `m` (expired), so packing also prunes.
 */
export function packEntries(m: NumberMap, value: (v: number) => number | null): Buffer {
  const b = Buffer.allocUnsafe(4 + m.size * 16);
  let o = 4;
  let n = 0;
  m.forEach((v, k) => {
    const x = value(v);
    if (x === null) return;
    b.writeDoubleLE(k, o);
    b.writeDoubleLE(x, o + 8);
    o += 16;
    n++;
  });
  if (n < m.size) m.retain((v) => value(v) !== null);
  b.writeUInt32LE(n, 0);
  return b.subarray(0, o);
}

/** Visits the entries packed at `at` in `b`; returns the offset after them. */
export function forEachPacked(b: Buffer, at: number, visit: (k: number, v: number) => void): number {
  const n = b.readUInt32LE(at);
  let o = at + 4;
  for (let i = 0; i < n; i++, o += 16) visit(b.readDoubleLE(o), b.readDoubleLE(o + 8));
  return o;
}
